package events

// FastJSON is the reflection-free encoder Marshal and AppendJSON try first;
// ok is false where they defer to json.Marshal.
func FastJSON(e *Event, dst []byte) (out []byte, ok bool) { return e.appendJSON(dst) }
