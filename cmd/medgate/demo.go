package main

import (
	"context"
	"io"
)

func runDemo(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	return nil
}
