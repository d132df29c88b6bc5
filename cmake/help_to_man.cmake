# cmake -DPROGRAM=path -DNAME=keel -DDESCRIPTION=text -DVERSION=x.y.z -DOUTPUT=keel.1 -P help_to_man.cmake
# A plain man page holding `PROGRAM --help` as it prints it: man_pages.cmake's fallback when help2man is not
# installed.
execute_process(COMMAND ${PROGRAM} --help OUTPUT_VARIABLE help COMMAND_ERROR_IS_FATAL ANY)
# roff reads a backslash as an escape, and a line starting with '.' or '\'' as a request.
string(REPLACE "\\" "\\e" help "${help}")
string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" help "${help}")
string(TOUPPER "${NAME}" title)
file(WRITE ${OUTPUT} ".TH ${title} 1 \"\" \"Keel ${VERSION}\" \"User Commands\"
.SH NAME
${NAME} \\- ${DESCRIPTION}
.SH DESCRIPTION
.nf
${help}.fi
")
