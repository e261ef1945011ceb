/*
 * lchan.c -- braid.chan, its methods, braid.select, braid.after and
 * braid.ticker.
 *
 * Return conventions are API.md's: expected outcomes (timeout, closed,
 * full, empty) are returned as nil|false plus a reason string; misuse
 * raises in Lua's own words.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "internal.h"
#include "lruntime.h"

static braid_chan_t *checkchan(lua_State *L, int arg) {
  return (braid_chan_t *)braid__checkhandle(L, arg, &braid_chan_type);
}

/* Encodes the value to send (argument arg); raises on nil or a value that
 * cannot travel. */
static braid_msg_t *checkvalue(lua_State *L, int arg, const char *fname) {
  if (lua_isnoneornil(L, arg))
    braid__argerror(L, arg, fname, "nil is never a channel value: send false or a sentinel");
  return braid__encode(L, arg, 1, "value");
}

/* Pushes the close error of a closed channel, or "closed". */
static void pushclosed(lua_State *L, braid_msg_t *err) {
  if (err) {
    braid__decode1(L, err);
    braid_msg_release(err);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "closed");
    }
  } else {
    lua_pushliteral(L, "closed");
  }
}

/* The capacity rule (API.md): an integer from 0 to math.maxinteger (a
 * float with such an integer value too, e.g. 2^62), or math.huge. */
static int l_chan(lua_State *L) {
  size_t cap = 0;
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer i = 0;
    bool ok, huge = false;
    if (lua_isinteger(L, 1)) {
      i = lua_tointeger(L, 1);
      ok = i >= 0;
    } else {
      lua_Number n = braid__checknumber(L, 1, "braid.chan");
      huge = n == HUGE_VAL;
      ok = huge || (lua_numbertointeger(n, &i) && (lua_Number)i == n && i >= 0);
    }
    if (!ok)
      braid__argerror(L, 1, "braid.chan", "capacity must be an integer from 0 to math.maxinteger, "
                                          "or math.huge");
    cap = huge ? BRAID_UNBOUNDED : (size_t)i;
  }
  static const char *const policies[] = { "block", "drop", "slide", NULL };
  int policy = 0;
  if (!lua_isnoneornil(L, 2)) {
    const char *p = lua_tostring(L, 2);
    if (lua_type(L, 2) != LUA_TSTRING) braid__typeerror(L, 2, "braid.chan", "string");
    while (policies[policy] && strcmp(policies[policy], p) != 0) policy++;
    if (policies[policy] == NULL)
      braid__argerror(L, 2, "braid.chan", lua_pushfstring(L, "policy must be 'block', 'drop' "
                                                          "or 'slide', got '%s'", p));
  }
  braid_chan_t *ch = braid_chan_new(cap, (braid_policy_t)policy);
  if (ch == NULL) return luaL_error(L, "braid: out of memory");
  braid__pushhandle(L, (braid_obj_t *)ch);
  braid_chan_release(ch);
  return 1;
}

static int finish_send(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  braid_msg_release(r->s_msg);
  if (r->s_index == BRAID_W_TIMEOUT) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  if (r->s_err == BRAID_ECLOSED) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (r->s_err == BRAID_ENOMEM) return luaL_error(L, "braid: out of memory");
  braid__count_message();
  lua_pushboolean(L, 1);
  return 1;
}

static int l_send(lua_State *L) {
  braid_chan_t *ch = checkchan(L, 1);
  /* No timeout (the common case) without a call. */
  int64_t deadline = lua_isnoneornil(L, 3) ? BRAID_FOREVER
                   : braid__timeout_deadline(braid__opttimeout(L, 3, "chan:send"));
  braid_msg_t *m = checkvalue(L, 2, "chan:send");
  braid_waiter_t *w;
  braid_case_t *tc = braid__wait1_case(L, deadline, &w);
  if (tc) {                           /* a task: try, or queue, in one lock */
    tc->c_op = BRAID_OP_SEND;
    tc->c_obj = ch;
    tc->c_msg = m;
    int rc = braid_chan_send_arm(ch, m, tc, w);
    if (rc == BRAID_EAGAIN)
      return braid__wait1_park(L, deadline, finish_send, "send", (braid_obj_t *)ch);
    braid_selres_t r = { 0, rc, NULL };
    if (rc != 0) braid_msg_release(m);
    return finish_send(L, tc, 1, &r);
  }
  /* Fast path: room in the buffer or a receiver waiting. */
  int rc = braid__cancel_pending(L) ? BRAID_EAGAIN : braid_chan_try_send(ch, m);
  if (rc != BRAID_EAGAIN) {
    braid_case_t c = { .c_op = BRAID_OP_SEND, .c_obj = ch, .c_msg = m };
    braid_selres_t r = { 0, rc, NULL };
    if (rc != 0) braid_msg_release(m);
    return finish_send(L, &c, 1, &r);
  }
  braid_case_t c = { .c_op = BRAID_OP_SEND, .c_obj = ch, .c_msg = m };
  return braid__wait(L, &c, 1, deadline, finish_send, "send", (braid_obj_t *)ch);
}

static int finish_recv(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  if (r->s_index == BRAID_W_TIMEOUT) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  if (r->s_err == BRAID_ECLOSED) {
    lua_pushnil(L);
    pushclosed(L, r->s_msg);
    return 2;
  }
  braid__decode1(L, r->s_msg);
  braid_msg_release(r->s_msg);
  return 1;
}

static int l_recv(lua_State *L) {
  braid_chan_t *ch = checkchan(L, 1);
  int64_t deadline = lua_isnoneornil(L, 2) ? BRAID_FOREVER
                   : braid__timeout_deadline(braid__opttimeout(L, 2, "chan:recv"));
  braid_selres_t r = { 0, BRAID_EAGAIN, NULL };
  braid_waiter_t *w;
  braid_case_t *tc = braid__wait1_case(L, deadline, &w);
  if (tc) {                           /* a task: try, or queue, in one lock */
    tc->c_op = BRAID_OP_RECV;
    tc->c_obj = ch;
    tc->c_msg = NULL;
    r.s_err = braid_chan_recv_arm(ch, &r.s_msg, tc, w);
    if (r.s_err == BRAID_EAGAIN)
      return braid__wait1_park(L, deadline, finish_recv, "recv", (braid_obj_t *)ch);
    return finish_recv(L, tc, 1, &r);
  }
  braid_case_t c = { .c_op = BRAID_OP_RECV, .c_obj = ch };
  if (!braid__cancel_pending(L)) r.s_err = braid_chan_try_recv(ch, &r.s_msg);  /* fast path */
  if (r.s_err != BRAID_EAGAIN) return finish_recv(L, &c, 1, &r);
  return braid__wait(L, &c, 1, deadline, finish_recv, "recv", (braid_obj_t *)ch);
}

static int l_try_send(lua_State *L) {
  braid_chan_t *ch = checkchan(L, 1);
  braid_msg_t *m = checkvalue(L, 2, "chan:try_send");
  int rc = braid_chan_try_send(ch, m);
  if (rc == 0) {
    braid__count_message();
    lua_pushboolean(L, 1);
    return 1;
  }
  braid_msg_release(m);
  if (rc == BRAID_ENOMEM) return luaL_error(L, "braid: out of memory");
  lua_pushboolean(L, 0);
  if (rc == BRAID_ECLOSED) lua_pushliteral(L, "closed");
  else lua_pushliteral(L, "full");
  return 2;
}

static int l_try_recv(lua_State *L) {
  braid_chan_t *ch = checkchan(L, 1);
  braid_msg_t *m = NULL;
  int rc = braid_chan_try_recv(ch, &m);
  if (rc == 0) {
    braid__decode1(L, m);
    braid_msg_release(m);
    return 1;
  }
  lua_pushnil(L);
  if (rc == BRAID_ECLOSED) pushclosed(L, m);
  else lua_pushliteral(L, "empty");
  return 2;
}

static int l_close(lua_State *L) {
  braid_chan_t *ch = checkchan(L, 1);
  braid_msg_t *err = NULL;
  if (!lua_isnoneornil(L, 2)) err = braid__encode(L, 2, 1, "value");
  lua_pushboolean(L, braid_chan_close(ch, err) == 0);
  return 1;
}

static int iter_next(lua_State *L);

static int finish_iter(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  if (r->s_index == BRAID_W_TIMEOUT) {
    braid_msg_release(r->s_msg);
    lua_pushnil(L);
    return 1;
  }
  if (r->s_err == BRAID_ECLOSED) {
    /* A plain close ends the loop quietly; a close error (a pipeline stage
     * that raised, ch:close(err)) is raised once the buffer is drained, so
     * that a for loop cannot mistake a failure for the end of the data. */
    if (r->s_msg == NULL) {
      lua_pushnil(L);
      return 1;
    }
    braid__decode1(L, r->s_msg);
    braid_msg_release(r->s_msg);
    if (lua_isnil(L, -1)) return 1;
    return lua_error(L);
  }
  braid__decode1(L, r->s_msg);
  braid_msg_release(r->s_msg);
  return 1;
}

static int iter_next(lua_State *L) {
  braid_chan_t *ch = checkchan(L, lua_upvalueindex(1));
  int64_t deadline = BRAID_FOREVER;
  if (!lua_isnil(L, lua_upvalueindex(2)))
    deadline = braid_deadline_after(lua_tonumber(L, lua_upvalueindex(2)));
  braid_case_t c = { .c_op = BRAID_OP_RECV, .c_obj = ch };
  braid_selres_t r = { 0, BRAID_EAGAIN, NULL };
  if (!braid__cancel_pending(L)) r.s_err = braid_chan_try_recv(ch, &r.s_msg);  /* fast path */
  if (r.s_err != BRAID_EAGAIN) return finish_iter(L, &c, 1, &r);
  return braid__wait(L, &c, 1, deadline, finish_iter, "recv", (braid_obj_t *)ch);
}

static int l_iter(lua_State *L) {
  checkchan(L, 1);
  if (!lua_isnoneornil(L, 2)) braid__optdeadline(L, 2, "chan:iter");  /* validates */
  lua_settop(L, 2);
  lua_pushcclosure(L, iter_next, 2);
  return 1;
}

static int l_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)braid_chan_len(checkchan(L, 1)));
  return 1;
}

static void pushcap(lua_State *L, size_t cap) {
  if (cap == BRAID_UNBOUNDED) lua_pushnumber(L, HUGE_VAL);
  else lua_pushinteger(L, (lua_Integer)cap);
}

static int l_cap(lua_State *L) {
  braid_chan_stats_t st;
  braid_chan_stats(checkchan(L, 1), &st);
  pushcap(L, st.cap);
  return 1;
}

static int l_is_closed(lua_State *L) {
  lua_pushboolean(L, braid_chan_is_closed(checkchan(L, 1)));
  return 1;
}

static int l_chan_stats(lua_State *L) {
  braid_chan_stats_t st;
  braid_chan_stats(checkchan(L, 1), &st);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)st.sent);
  lua_setfield(L, -2, "sent");
  lua_pushinteger(L, (lua_Integer)st.received);
  lua_setfield(L, -2, "received");
  lua_pushinteger(L, (lua_Integer)st.dropped);
  lua_setfield(L, -2, "dropped");
  lua_pushinteger(L, (lua_Integer)st.len);
  lua_setfield(L, -2, "len");
  pushcap(L, st.cap);
  lua_setfield(L, -2, "cap");
  lua_pushboolean(L, st.closed);
  lua_setfield(L, -2, "closed");
  return 1;
}

static int l_chan_tostring(lua_State *L) {
  braid_obj_t *o = braid__tohandle(L, 1);
  if (o == NULL) {
    lua_pushliteral(L, "braid.chan (released)");
    return 1;
  }
  braid_chan_stats_t st;
  braid_chan_stats((braid_chan_t *)o, &st);
  if (st.cap == BRAID_UNBOUNDED)
    lua_pushfstring(L, "braid.chan#%I (%I/inf%s)", (lua_Integer)o->o_id, (lua_Integer)st.len,
                    st.closed ? ", closed" : "");
  else
    lua_pushfstring(L, "braid.chan#%I (%I/%I%s)", (lua_Integer)o->o_id, (lua_Integer)st.len,
                    (lua_Integer)st.cap, st.closed ? ", closed" : "");
  return 1;
}

/* ------------------------------------------------------------------------ */
/* braid.select */

static int finish_select(lua_State *L, braid_case_t *c, int n, braid_selres_t *r) {
  int i = r->s_index;
  if (i == BRAID_W_TIMEOUT) {
    braid_msg_release(r->s_msg);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 3;
  }
  lua_pushinteger(L, i + 1);
  switch (c[i].c_op) {
    case BRAID_OP_SEND:
      braid_msg_release(r->s_msg);
      if (r->s_err == 0) {
        braid__count_message();
        lua_pushboolean(L, 1);
        return 2;
      }
      if (r->s_err == BRAID_ENOMEM) return luaL_error(L, "braid: out of memory");
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "closed");
      return 3;
    case BRAID_OP_RECV:
      if (r->s_err == BRAID_ECLOSED) {
        lua_pushnil(L);
        pushclosed(L, r->s_msg);
        return 3;
      }
      braid__decode1(L, r->s_msg);
      braid_msg_release(r->s_msg);
      return 2;
    default:                            /* a future settled */
      if (r->s_err == 0) {
        braid__decode1(L, r->s_msg);
        braid_msg_release(r->s_msg);
        return 2;
      }
      lua_pushnil(L);
      if (r->s_err == BRAID_ECANCELED) {
        braid_msg_release(r->s_msg);
        lua_pushliteral(L, "cancelled");
      } else {
        int k = r->s_msg ? braid__decode(L, r->s_msg) : 0;
        braid_msg_release(r->s_msg);
        if (k == 0) lua_pushliteral(L, "rejected");
        else if (k > 1) lua_pop(L, k - 1);  /* the error, not its traceback */
      }
      return 3;
  }
}

static int l_select(lua_State *L) {
  braid__checktype(L, 1, LUA_TTABLE, "braid.select");
  int64_t deadline = BRAID_FOREVER;
  bool dflt = false;
  if (!lua_isnoneornil(L, 2)) {
    braid__checktype(L, 2, LUA_TTABLE, "braid.select");
    if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TNUMBER)
        braid__argerror(L, 2, "braid.select", lua_pushfstring(L, "opts.timeout must be a number, "
                                                              "got %s", braid__typename(L, -1)));
      lua_Number s = lua_tonumber(L, -1);
      if (!(s >= 0)) braid__argerror(L, 2, "braid.select", "opts.timeout must be >= 0");  /* NaN too */
      deadline = braid_deadline_after(s);
    }
    lua_getfield(L, 2, "default");
    dflt = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  int n = (int)luaL_len(L, 1);
  braid_case_t small[8];
  braid_case_t *cases = n <= 8 ? small : lua_newuserdatauv(L, (size_t)n * sizeof *cases, 0);
  memset(cases, 0, (size_t)(n > 0 ? n : 0) * sizeof *cases);
  for (int i = 0; i < n; i++) {
    lua_geti(L, 1, i + 1);
    braid_obj_t *o = braid__tohandle(L, -1);
    if (o && o->o_type == &braid_chan_type) {
      cases[i].c_op = BRAID_OP_RECV;
      cases[i].c_obj = o;
    } else if (o && o->o_type == &braid_future_type) {
      cases[i].c_op = BRAID_OP_AWAIT;
      cases[i].c_obj = o;
    } else if (lua_istable(L, -1)) {
      lua_geti(L, -1, 1);
      o = braid__tohandle(L, -1);
      lua_pop(L, 1);
      if (o == NULL || o->o_type != &braid_chan_type) goto bad;
      lua_geti(L, -1, 2);
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        goto bad;
      }
      /* Encode under protection: an error must not leak what the earlier
       * cases encoded. */
      braid_msg_t *m = braid__pencode(L, -1, 1, "value");
      if (m == NULL) {
        for (int k = 0; k < i; k++)
          if (cases[k].c_op == BRAID_OP_SEND) braid_msg_release(cases[k].c_msg);
        return lua_error(L);
      }
      lua_pop(L, 1);
      cases[i].c_op = BRAID_OP_SEND;
      cases[i].c_obj = o;
      cases[i].c_msg = m;
    } else {
      goto bad;
    }
    lua_pop(L, 1);
    continue;
  bad:
    for (int k = 0; k < i; k++)
      if (cases[k].c_op == BRAID_OP_SEND) braid_msg_release(cases[k].c_msg);
    return luaL_error(L, "bad argument #1 to 'braid.select' (case %d: a channel, a future or {channel, value} expected)", i + 1);
  }
  if (dflt) {
    braid_selres_t r;
    if (braid_select_try(cases, n, &r) == BRAID_EAGAIN) {
      for (int k = 0; k < n; k++)
        if (cases[k].c_op == BRAID_OP_SEND) braid_msg_release(cases[k].c_msg);
      lua_pushnil(L);
      lua_pushnil(L);
      lua_pushliteral(L, "empty");
      return 3;
    }
    for (int k = 0; k < n; k++)
      if (cases[k].c_op == BRAID_OP_SEND && !(r.s_index == k && r.s_err == 0))
        braid_msg_release(cases[k].c_msg);
    return finish_select(L, cases, n, &r);
  }
  return braid__wait(L, cases, n, deadline, finish_select, "select",
                     n > 0 ? (braid_obj_t *)cases[0].c_obj : NULL);
}

/* ------------------------------------------------------------------------ */
/* braid.after / braid.ticker: timers that feed a channel */

typedef struct tick {
  braid_timer_t tk_timer;
  braid_chan_t *tk_ch;              /* one reference */
  int64_t tk_period;                /* 0 for after */
  braid_timerq_t *tk_q;
} tick_t;

static void tick_fire(braid_timer_t *tm) {
  tick_t *tk = tm->t_data;
  braid_chan_t *ch = tk->tk_ch;
  braid_msg_t *m = braid__msg_number((double)braid_now_ns() / 1e9);
  if (m && braid_chan_try_send(ch, m) != 0) braid_msg_release(m);
  /* Acquire: pairs with the release drops of the other references. */
  bool alone = atomic_load_explicit(&((braid_obj_t *)ch)->o_rc, memory_order_acquire) == 1;
  if (tk->tk_period == 0 || alone || braid_chan_is_closed(ch) ||
      braid_timer_add(tk->tk_q, &tk->tk_timer, tm->t_deadline + tk->tk_period, tick_fire, tk) != 0) {
    if (tk->tk_period == 0) braid_chan_close(ch, NULL);
    braid_chan_release(ch);
    free(tk);
  }
}

static int start_tick(lua_State *L, lua_Number s, bool repeat) {
  braid_timerq_t *q = braid__timers(L);
  braid_chan_t *ch = braid_chan_new(1, repeat ? BRAID_POLICY_DROP : BRAID_POLICY_BLOCK);
  tick_t *tk = ch ? calloc(1, sizeof *tk) : NULL;
  if (tk == NULL) {
    if (ch) braid_chan_release(ch);
    return luaL_error(L, "braid: out of memory");
  }
  braid__pushhandle(L, (braid_obj_t *)ch);
  tk->tk_ch = ch;                       /* the timer keeps the creation reference */
  tk->tk_q = q;
  tk->tk_period = repeat ? (int64_t)(s * 1e9) : 0;
  if (repeat && tk->tk_period < 100000) tk->tk_period = 100000;
  if (braid_timer_add(q, &tk->tk_timer, braid_deadline_after(s), tick_fire, tk) != 0) {
    braid_chan_release(ch);
    free(tk);
    return luaL_error(L, "braid: out of memory");
  }
  return 1;
}

static int l_after(lua_State *L) {
  lua_Number s = braid__checknumber(L, 1, "braid.after");
  if (!(s >= 0)) braid__argerror(L, 1, "braid.after", "seconds must be >= 0");
  return start_tick(L, s, false);
}

static int l_ticker(lua_State *L) {
  lua_Number s = braid__checknumber(L, 1, "braid.ticker");
  if (!(s > 0)) braid__argerror(L, 1, "braid.ticker", "seconds must be > 0");
  return start_tick(L, s, true);
}

void braid__open_chan(lua_State *L) {
  static const luaL_Reg methods[] = {
    { "send", l_send }, { "recv", l_recv }, { "try_send", l_try_send },
    { "try_recv", l_try_recv }, { "close", l_close }, { "iter", l_iter },
    { "cap", l_cap }, { "is_closed", l_is_closed }, { "stats", l_chan_stats },
    { "__len", l_len }, { "__tostring", l_chan_tostring }, { NULL, NULL } };
  braid__newtype(L, &braid_chan_type, methods);
  static const luaL_Reg fns[] = {
    { "chan", l_chan }, { "select", l_select }, { "after", l_after },
    { "ticker", l_ticker }, { NULL, NULL } };
  luaL_setfuncs(L, fns, 0);
}
