package app

// maxDeadPayloadKept, for the relay's tests in package app_test.
const MaxDeadPayloadKept = maxDeadPayloadKept
