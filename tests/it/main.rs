mod fixtures;
mod sim_protocol;
