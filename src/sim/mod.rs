//! Simulator (STUB for the lead's compile; replaced by the wt-sim branch).
#![allow(missing_docs)]
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    pub agents: usize,
    pub speed: f64,
}
pub struct Simulator;
impl Simulator {
    pub async fn start(_l: std::net::SocketAddr, _c: SimConfig) -> anyhow::Result<Simulator> {
        todo!()
    }
    pub fn base_url(&self) -> String {
        todo!()
    }
    pub fn client_id(&self) -> &str {
        todo!()
    }
    pub fn client_secret(&self) -> &str {
        todo!()
    }
    pub async fn shutdown(self) {}
}
