package idempotency

// LuaLib exposes the scripts' shared Lua functions to the tests.
const LuaLib = luaLib
