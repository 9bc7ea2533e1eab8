// Command publisher is the operator's tool for the payment worker: it
// provisions the streams, publishes capture and void commands (optionally
// waiting for their outcome), follows the result events, and runs a demo
// against the sandbox gateway.
//
// Exit status: 0 success, 1 a command failed, was rejected or timed out (or
// NATS could not be reached), 2 a usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "publisher:", err)
		os.Exit(exitCode(err))
	}
}

// Exit codes.
const (
	exitFailed = 1
	exitUsage  = 2
)

// exitError is an error that carries the process exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErrorf returns a usage error (exit status 2).
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode maps an error returned by run to the exit status.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailed
}

// env is what run was given: the environment and the standard streams.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// subcommand is one verb of the tool.
type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func subcommands() []subcommand {
	return []subcommand{
		{"provision", "create the streams that are missing, raise their replicas (the worker also does it at start)", runProvision},
		{"capture", "publish one capture command, optionally wait for its outcome", runCapture},
		{"void", "publish one void command, optionally wait for its outcome", runVoid},
		{"batch", "publish a CSV or JSON Lines file of commands, optionally wait for every outcome", runBatch},
		{"events", "follow the result events, with filters", runEvents},
		{"replay", "republish dead-lettered commands from the DLQ (same keys), with filters and --dry-run", runReplay},
		{"demo", "authorise payments on the sandbox gateway and capture/void them", runDemo},
	}
}

// run is the whole program: args are the command line including the program
// name; nothing is read from the process environment but through getenv.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := &env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) > 0 {
		args = args[1:]
	}
	if len(args) == 0 {
		printUsage(stderr)
		return usageErrorf("no command given")
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			return run(ctx, []string{"publisher", args[1], "--help"}, getenv, stdin, stdout, stderr)
		}
		printUsage(stdout)
		return nil
	}
	for _, c := range subcommands() {
		if c.name == name {
			return c.run(ctx, e, args[1:])
		}
	}
	return usageErrorf("unknown command %q (run `publisher --help`)", name)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `publisher: the operator's tool for the payment worker.

Usage:
  publisher <command> [flags]

Commands:
`)
	for _, c := range subcommands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run "publisher <command> --help" for the flags of a command.
Exit status: 0 ok, 1 a command failed, was rejected or timed out, 2 usage error.
`)
}
