//! REST API (STUB for the lead's compile; replaced by the wt-api branch).
#![allow(missing_docs)]
pub type ReadinessFn = std::sync::Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Option<crate::health::HealthReport>>
        + Send
        + Sync,
>;
pub struct ApiState {
    pub db: sea_orm::DatabaseConnection,
    pub readiness: ReadinessFn,
}
pub fn routes(_state: ApiState) -> impl poem::Endpoint {
    poem::Route::new()
}
pub fn spec_yaml() -> String {
    String::new()
}
