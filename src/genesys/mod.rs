//! Genesys Cloud REST client (in progress)
