-- luacheck configuration (issue 15): lua/, examples/, tests/lua/.
-- Run by tests/app/luacheck.sh (ctest app_luacheck).
std = "lua54"
max_line_length = 140
-- braid is preloaded as a global by the `braid` interpreter.
read_globals = { "braid" }
-- Unused arguments are the norm in callbacks (fn(ctx, item), handlers).
unused_args = false
-- Shadowing an upvalue (a local `srv`, `ch` per test) is idiomatic here.
ignore = { "421", "422", "423", "431", "432", "433" }
-- Specs: busted's globals; they also write globals on purpose (a task's
-- globals are its own: API.md "Values that cross threads").
-- Exact expected messages make long string lines; a spec's unused locals
-- (handles kept alive on purpose) are not reported.
files["tests/lua"] = { std = "+busted", allow_defined = true, allow_defined_top = true,
  max_line_length = false, ignore = { "211" },
  globals = { "braid_spec_global", "braid_codec_probe", "spec_main_marker" } }
exclude_files = { "build/**", "**/sanitize-*/**" }
