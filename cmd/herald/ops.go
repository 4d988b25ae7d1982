package main

import (
	"context"
	"errors"
	"io"
)

func runDeliveries(context.Context, []string, io.Writer, io.Writer) error {
	return errors.New("not yet")
}

func runDeadLetters(context.Context, []string, io.Writer, io.Writer) error {
	return errors.New("not yet")
}
