# cmake/install.cmake -- install rules: `cmake --install <build>` (and
# `make install` once the Makefile has the target).  Included from
# CMakeLists.txt after every target is defined; each rule is guarded by
# if(TARGET ...) so that a tree without bindings/ or app/ still installs
# what it has.
#
# What goes where, under CMAKE_INSTALL_PREFIX (/usr/local by default):
#
#   braid.so            lib/lua/5.4/            BRAID_INSTALL_CMOD_DIR
#   lua/braid/*.lua     share/lua/5.4/braid/    BRAID_INSTALL_LMOD_DIR
#   braid (executable)  bin/
#   include/braid.h     include/
#   libbraid_bindings.a, libbraid_core.a        lib/ (CMAKE_INSTALL_LIBDIR)
#   braid.pc            lib/pkgconfig/
#
# lib/lua/5.4 and share/lua/5.4 are on the default package.cpath and
# package.path of Debian's lua5.4 for the prefixes /usr/local and /usr, so
# after a default install `lua5.4 -e 'require "braid"'` needs no LUA_CPATH.
# (Debian's own packages use lib/<multiarch>/lua/5.4; lua5.4 searches both.)
# braid.so carries lua/braid/*.lua inside it (cmake/embed_lua.cmake); the
# installed copies are for reading, and for hosts that load them by path.
#
# The static libraries and braid.pc are for C programs that embed Lua and
# open braid with luaopen_braid (include/braid.h):
#   cc host.c $(pkg-config --cflags --libs braid)

include(GNUInstallDirs)

set(BRAID_INSTALL_CMOD_DIR "lib/lua/5.4" CACHE STRING
    "Where braid.so goes (Lua 5.4 C modules), relative to the prefix or absolute")
set(BRAID_INSTALL_LMOD_DIR "share/lua/5.4" CACHE STRING
    "Where braid/*.lua goes (Lua 5.4 Lua modules), relative to the prefix or absolute")

if(TARGET braid_module)
  install(TARGETS braid_module
          LIBRARY DESTINATION "${BRAID_INSTALL_CMOD_DIR}" COMPONENT lua)
endif()

file(GLOB _braid_install_lua CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/lua/braid/*.lua")
if(_braid_install_lua)
  install(FILES ${_braid_install_lua}
          DESTINATION "${BRAID_INSTALL_LMOD_DIR}/braid" COMPONENT lua)
endif()

if(TARGET braid)
  install(TARGETS braid RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT bin)
endif()

install(FILES "${CMAKE_SOURCE_DIR}/include/braid.h" "${CMAKE_SOURCE_DIR}/include/braid_errno.h"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT dev)

foreach(_t IN ITEMS braid_bindings braid_core)
  if(TARGET ${_t})
    install(TARGETS ${_t} ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT dev)
  endif()
endforeach()

# braid.pc.  Two steps, so that `cmake --install --prefix P` gets P in the
# file: configure time fills in everything but the prefix (kept as the
# literal @BRAID_PC_PREFIX@), install time fills in the prefix.
function(_braid_pc_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()
_braid_pc_dir(BRAID_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
_braid_pc_dir(BRAID_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
_braid_pc_dir(BRAID_PC_CMOD "${BRAID_INSTALL_CMOD_DIR}")
_braid_pc_dir(BRAID_PC_LMOD "${BRAID_INSTALL_LMOD_DIR}")
# braid.h includes <lua.h>, and luaopen_braid calls into Lua: a host needs
# Lua's flags too, through lua5.4.pc when CMakeLists.txt found Lua with it.
set(BRAID_PC_CFLAGS "-I\${includedir}")
set(BRAID_PC_LIBS "-L\${libdir} -lbraid_bindings -lbraid_core")
if(LUA54_FOUND)
  set(BRAID_PC_REQUIRES "lua5.4")
else()
  set(BRAID_PC_REQUIRES "")
  foreach(_dir IN LISTS BRAID_LUA_INCLUDE_DIRS)
    string(APPEND BRAID_PC_CFLAGS " -I${_dir}")
  endforeach()
  foreach(_lib IN LISTS BRAID_LUA_LIBRARIES)
    string(APPEND BRAID_PC_LIBS " ${_lib}")
  endforeach()
endif()
# braid.nats (bindings/lnats.c) links nats.c; braid.net's TLS
# (bindings/lnet.c) needs OpenSSL's libssl; BRAID_PC_EXTRA_LIBS: the
# libraries of braid.http (CMakeLists.txt).
if(BRAID_NATS_LIBRARY)
  string(APPEND BRAID_PC_LIBS " -lnats")
endif()
string(APPEND BRAID_PC_LIBS "${BRAID_PC_EXTRA_LIBS} -lssl -lcrypto -pthread -lm")
set(BRAID_PC_PREFIX "@BRAID_PC_PREFIX@")
set(_braid_pc_stage "${CMAKE_BINARY_DIR}/braid.pc.stage")
set(_braid_pc_out "${CMAKE_BINARY_DIR}/braid.pc")
configure_file("${CMAKE_CURRENT_LIST_DIR}/braid.pc.in" "${_braid_pc_stage}" @ONLY)
install(CODE "
  set(BRAID_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  configure_file(\"${_braid_pc_stage}\" \"${_braid_pc_out}\" @ONLY)
" COMPONENT dev)
install(FILES "${_braid_pc_out}"
        DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig" COMPONENT dev)
