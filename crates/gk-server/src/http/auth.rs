//! Extractors that demand a valid token ([`User`]) or an admin token ([`Admin`]).

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::AppState;
use crate::auth::{AuthError, Claims, Role};
use crate::error::ApiError;

/// A caller with a valid token.
#[derive(Debug, Clone)]
pub struct User(pub Claims);

/// A caller with a valid admin token.
#[derive(Debug, Clone)]
pub struct Admin(pub Claims);

fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)
}

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        Ok(User(state.tokens.verify(token)?))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let User(claims) = User::from_request_parts(parts, state).await?;
        if claims.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("`{}` is not an admin", claims.sub),
            ));
        }
        Ok(Admin(claims))
    }
}
