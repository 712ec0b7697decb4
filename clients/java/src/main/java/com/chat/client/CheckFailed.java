package com.chat.client;

/** CheckFailed is a violated expectation of the client check; its message says what was expected and what came. */
final class CheckFailed extends RuntimeException {
  CheckFailed(String message) {
    super(message);
  }

  /** check throws CheckFailed with the formatted message unless {@code condition} holds. */
  static void check(boolean condition, String format, Object... args) {
    if (!condition) {
      throw new CheckFailed(String.format(format, args));
    }
  }
}
