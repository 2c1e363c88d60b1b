//! The Passport role: nexus and Passport 1.4 login over HTTP, issuing signed tickets.
