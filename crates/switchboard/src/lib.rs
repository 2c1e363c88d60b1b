//! The switchboard role: chat sessions held in memory (USR/CAL/ANS/MSG/BYE).
