#ifndef FERRY_CEDITLINE_H
#define FERRY_CEDITLINE_H
// libedit's readline-compatible interface: line editing with arrow keys and history for the interactive shell.
#include <stdio.h>
#include <editline/readline.h>
#endif
