# bpf_skeleton(<target> SOURCE <file.bpf.c> NAME <skeleton name> [INCLUDES <dir>...])
# Compiles a BPF C file with clang (-target bpf) and generates a libbpf skeleton header with
# bpftool. The skeleton embeds the object bytes, so nothing is read from the build tree at run
# time. Creates an INTERFACE target <target> whose include directory holds <NAME>.skel.h.
find_program(BPF_CLANG NAMES clang clang-16 clang-15 clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

function(bpf_skeleton target)
  cmake_parse_arguments(ARG "" "SOURCE;NAME" "INCLUDES" ${ARGN})
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${target})
  set(object ${out_dir}/${ARG_NAME}.o)
  set(skeleton ${out_dir}/${ARG_NAME}.skel.h)
  # The host's multiarch include directory provides <asm/types.h> to the UAPI headers.
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-multiarch
                  OUTPUT_VARIABLE multiarch OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  set(flags -target bpf -mcpu=v3 -O2 -g -Wall -Wextra -Werror)
  if(multiarch)
    list(APPEND flags -idirafter /usr/include/${multiarch})
  endif()
  foreach(dir ${ARG_INCLUDES})
    list(APPEND flags -I${dir})
  endforeach()
  get_filename_component(source ${ARG_SOURCE} ABSOLUTE)
  add_custom_command(
    OUTPUT ${object}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${BPF_CLANG} ${flags} -MD -MF ${object}.d -c ${source} -o ${object}
    DEPENDS ${source}
    DEPFILE ${object}.d
    COMMENT "BPF ${ARG_NAME}.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skeleton}
    COMMAND ${BPFTOOL} gen skeleton ${object} name ${ARG_NAME} > ${skeleton}
    DEPENDS ${object}
    COMMENT "BPF skeleton ${ARG_NAME}.skel.h"
    VERBATIM)
  add_custom_target(${target}_gen DEPENDS ${skeleton})
  add_library(${target} INTERFACE)
  add_dependencies(${target} ${target}_gen)
  target_include_directories(${target} INTERFACE ${out_dir})
endfunction()
