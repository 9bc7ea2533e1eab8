// Package client sends capture and void commands to payworker and reads
// their outcomes: what an order service needs, without writing the command
// JSON, the Nats-Msg-Id, the subjects or the event correlation by hand.
//
// # The story
//
// An order service authorised a card payment at checkout. When the order
// ships it captures the authorisation; when it is cancelled before shipping
// it voids it. It builds a Capture (or a Void), with an idempotency key
// that names the business fact, such as the order and its shipment:
//
//	c := client.New(js) // a jetstream.JetStream on the worker's NATS
//	defer c.Close()
//	res, err := c.Do(ctx, client.Capture{
//		IdempotencyKey: "order-42/shipment-1",
//		MerchantID:     "M001",
//		TransactionID:  authorisationID,
//		Amount:         1000, // minor units: 1000 JPY, or 10.00 EUR as 1000
//		Currency:       "JPY",
//	})
//
// Do checks the command against the same JSON Schema the worker applies,
// with the same error texts (a *ValidationError naming the field, the
// problem and the rule), publishes it to payments.cmd.capture with
// Nats-Msg-Id = CommandID (a UUID when left empty) and the trace context of
// ctx, and waits for the result event on PAYMENT_EVENTS. The Result is one
// of *Succeeded, *Declined (the gateway's code and message), *Rejected
// (the field at fault), *DeadLettered (the reason; an operator replays it)
// or *Duplicate (the key was done before; Original holds that outcome).
//
// # Guarantees it relies on
//
// The worker calls the gateway at most once per (merchant, idempotency
// key), and publishes exactly one terminal event per key (SPEC §4). So a
// service may publish the same command again whenever it is unsure (after
// a crash, a timeout, a re-emitted fulfilment): with the same CommandID
// the stream keeps one copy within its duplicate window; with the same
// idempotency key the worker answers from the key's record, as a
// *Duplicate naming the original event. Publish errors say which case
// holds: ErrNotStored (nothing will happen) or ErrMaybeStored (publish
// again with the same CommandID).
//
// # Waiting
//
// Publish returns once JetStream stored the command. Do, AwaitCommand and
// Await then wait for the outcome. A Client has one follower of the events
// stream (an ordered consumer filtered to the event subjects) that hands
// every event to the waits it answers, so a thousand concurrent waits cost
// one consumer. An outcome stored before the wait began is found too: the
// follower remembers what it read lately, and older events are read in one
// shared pass over the stream's history (WithHistory bounds how far back
// Await looks). A Duplicate's original outcome is looked up the same way,
// and waited for a little when it is not stored yet: the worker records an
// outcome before it publishes it, so a duplicate can come first. Events
// reads the events with a filter, as an iterator.
//
// # Compatibility
//
// This package follows semantic versioning from the module's first tag: its
// API, the command and event formats, and the subjects are stable within a
// major version. The packages under internal/ are not part of it.
package client
