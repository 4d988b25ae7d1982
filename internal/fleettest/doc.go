// Package fleettest proves, with real processes, what several Herald
// processes on one database promise together: the fleet's busiest second
// stays within 5 % of Sender.RatePerMinute with 1, 2 and 3 processes; a
// project-wide QUOTA_EXCEEDED answered to one process pauses every process;
// the claims of a process killed with SIGKILL are taken over within seconds,
// nothing is lost, and no live process's lease is shortened.
//
// It holds only tests. The test binary starts copies of itself as Herald
// processes (TestMain runs one when its environment asks), all sending to
// one fake FCM that runs in the test process and timestamps every push.
package fleettest
