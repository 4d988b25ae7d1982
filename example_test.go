package herald_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/herald-push/herald"
	"github.com/herald-push/herald/migrations"
	"github.com/herald-push/herald/notification"
	"github.com/herald-push/herald/testutil"
)

// Example wires Herald into a host application: migrate, register the
// rules, raise an event in the host's own transaction, and run the relay and
// sender. Here the database is a throwaway cluster and FCM is the fake; a
// real application passes its own pool and a messaging client from
// firebase.NewApp.
func Example() {
	ctx := context.Background()
	cluster, err := testutil.StartCluster(ctx, testutil.ClusterConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Stop() //nolint:errcheck
	fake, err := testutil.StartFakeFCM(testutil.FakeFCMConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer fake.Close()

	// 1. The host's pool, migrated (or run migrations/*.sql with your own tool).
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if _, err := migrations.Up(ctx, pool); err != nil {
		log.Fatal(err)
	}

	// 2. Rules: which events notify whom. Hosts add their own event types.
	rules := notification.NewRules()
	if err := notification.On(rules, notification.NotifyCourseAuthor); err != nil {
		log.Fatal(err)
	}

	// 3. Herald on the host's pool and an FCM client. For real FCM:
	// herald.NewFCM(ctx, "") with GOOGLE_APPLICATION_CREDENTIALS set.
	fcm, err := herald.NewFCM(ctx, fake.ProjectID(), fake.ClientOptions()...)
	if err != nil {
		log.Fatal(err)
	}
	h, err := herald.New(pool, fcm, rules, herald.Config{})
	if err != nil {
		log.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Run(runCtx) }()

	// 4. The course author's phone registers its token.
	if err := h.Tokens().Register(ctx, "author-42", "fcm-token-of-authors-phone", notification.PlatformAndroid); err != nil {
		log.Fatal(err)
	}

	// 5. Domain code: the comment and its event commit together, or not at all.
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = h.Raise(ctx, tx, notification.CommentCreated{
		CourseID: "go-101", CourseTitle: "Go 101", CommentID: "c-1",
		CommenterID: "student-7", CommenterName: "Ann", CourseAuthorID: "author-42",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}

	for fake.AcceptedCount() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	push := fake.Accepted()[0]
	fmt.Println(push.Title)
	fmt.Println(push.Body)
	// Output:
	// New comment on Go 101
	// Ann commented on your course
}
