// SIGINT as something a blocking wait can see: the handler writes to a pipe that every wait also polls, so
// an interrupt that lands just before a wait begins is not lost.
#pragma once

namespace keel::cli {

/// Installs the SIGINT handler (once). Until then, SIGINT keeps its default action.
void catch_interrupts();

/// The pipe end that becomes readable on SIGINT; -1 before catch_interrupts().
int interrupt_fd() noexcept;

/// Whether SIGINT arrived since catch_interrupts().
bool interrupted() noexcept;

/// Sleeps for `ms` or until SIGINT, whichever comes first.
void sleep_unless_interrupted(int ms);

}  // namespace keel::cli
