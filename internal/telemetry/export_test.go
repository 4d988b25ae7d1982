package telemetry

// ParseTraceParent is parseTraceParent, for tests.
var ParseTraceParent = parseTraceParent
