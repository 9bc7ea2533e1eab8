// Package benchproc holds BenchmarkProcess, the process-level benchmark of
// the worker (issue 10): nats-server, redis-server, the sandbox gateway and
// one worker each run as their own OS process, as in production, and the
// worker's throughput is measured beside two floors on the same servers in
// the same run. The package has no code outside its tests; a plain
// `go test ./internal/benchproc` runs nothing. See docs/BENCHMARKS.md,
// "Worker against the floors (processes)", for the command and the figures.
package benchproc
