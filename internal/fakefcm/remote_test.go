package fakefcm_test

import (
	"context"
	"testing"
	"time"

	"firebase.google.com/go/v4/messaging"

	"github.com/herald-push/herald/internal/fakefcm"
)

// A client that knows only the fake's URL and certificate (a child process
// of `herald bench` or `herald chaos`) reaches it, and a client trusting
// another fake's certificate does not: the certificate is the fake's own.
func TestRemoteClientTrustsOnlyTheFakesCertificate(t *testing.T) {
	t.Parallel()
	fake, err := fakefcm.Start(fakefcm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	other, err := fakefcm.Start(fakefcm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	send := func(certPEM []byte) error {
		opts, err := fakefcm.RemoteClientOptions(fake.URL(), certPEM)
		if err != nil {
			t.Fatal(err)
		}
		client, err := fakefcm.NewMessagingClient(ctx, fake.ProjectID(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.Send(ctx, &messaging.Message{Token: "remote-token", Data: map[string]string{"k": "v"}})
		return err
	}
	if err := send(fake.CertPEM()); err != nil {
		t.Fatalf("send trusting the fake's own certificate: %v", err)
	}
	if got := fake.AcceptedFor("remote-token"); len(got) != 1 {
		t.Fatalf("accepted %d messages for remote-token, want 1", len(got))
	}
	if err := send(other.CertPEM()); err == nil {
		t.Error("a client trusting another fake's certificate reached this fake")
	}
	if _, err := fakefcm.RemoteClientOptions(fake.URL(), []byte("not pem")); err == nil {
		t.Error("RemoteClientOptions accepted a certificate that is not PEM")
	}
}
