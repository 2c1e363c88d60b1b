//! The Notification Server role: one task per MSNP client connection (login, lists, presence, switchboard referrals).
