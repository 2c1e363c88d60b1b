//! Test support: a typed MSNP test client and a TestCluster that runs the embedded server on 127.0.0.1:0.
