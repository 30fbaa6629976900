//! Storage (STUB for the lead's compile; replaced by the wt-api branch).
#![allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
#[error("db error: {0}")]
pub struct DbError(pub String);
pub async fn connect(_url: &str) -> Result<sea_orm::DatabaseConnection, DbError> {
    todo!()
}
