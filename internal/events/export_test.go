package events

// FastJSON is the reflection-free encoder Marshal tries first; ok is false
// where it defers to json.Marshal.
func FastJSON(e *Event, dst []byte) (out []byte, ok bool) { return e.appendJSON(dst) }
