mod api;
mod openapi;
