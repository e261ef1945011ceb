/*
 * lcodec.h -- the codec's wire format constants (internal).  lcodec.c
 * documents the format; lcodec_c.c and lcvalue.c build and read messages
 * without a lua_State and share these values with it.
 */
#ifndef BRAID_LCODEC_H
#define BRAID_LCODEC_H

#define CODEC_MAGIC 0x62726400u   /* "brd" + one byte of flags */
#define CODEC_MAGIC_MASK 0xffffff00u
#define F_REFS 0x01u              /* m_tag: some object has F_SHARED */
#define F_DEEP 0x02u              /* m_tag: nesting deeper than DEC_LOCAL_FRAMES */

/* The values are part of the format: lcodec_c.c and lcvalue.c build
 * messages without a lua_State.  Append, never renumber. */
enum {
  T_NIL = 1, T_FALSE = 2, T_TRUE = 3, T_INT = 4, T_FLT = 5, T_STR = 6,
  T_TABLE = 7, T_FUNC = 8, T_HANDLE = 9, T_REF = 10, T_UPREF = 11,
  T_MODULE = 12, T_MODFIELD = 13, T_ENV = 14
};
#define F_SHARED 0x80u            /* on a T_TABLE/T_FUNC/T_HANDLE tag byte */

#define DEC_LOCAL_FRAMES 32       /* decoder frames on the C stack */

#endif
