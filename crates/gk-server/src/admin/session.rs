//! The admin page session: the admin token in a cookie, and the CSRF value derived from it.

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::auth::{Claims, Role};
use crate::state::AppState;

/// The cookie that holds the admin token.
const COOKIE_NAME: &str = "gk_admin";

/// A signed-in admin.
#[derive(Debug, Clone)]
pub(super) struct AdminSession {
    /// Who.
    pub(super) claims: Claims,
    /// The value every form of this session must send back as `csrf`.
    pub(super) csrf: String,
}

/// The CSRF value of a token: a hash of it, so a page can carry it without carrying the token.
fn csrf_of(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("gk-csrf:{token}").as_bytes());
    hex::encode(&digest.as_ref()[..16])
}

fn cookie_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/admin/login").into_response();
        let token = cookie_token(parts).ok_or_else(to_login)?;
        let claims = state.tokens.verify(&token).map_err(|_| to_login())?;
        if claims.role != Role::Admin {
            return Err(to_login());
        }
        Ok(Self {
            claims,
            csrf: csrf_of(&token),
        })
    }
}

impl AdminSession {
    /// Refuses a form whose CSRF value is not this session's.
    pub(super) fn check_csrf(&self, sent: &str) -> Result<(), StaleForm> {
        // In constant time (for a given length), so timing tells nothing about the expected
        // value; the length is no secret (always 32 hex digits).
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            sent.as_bytes(),
            self.csrf.as_bytes(),
        )) {
            Ok(())
        } else {
            Err(StaleForm)
        }
    }
}

/// A form whose CSRF value is not the session's: answered 403.
#[derive(Debug)]
pub(super) struct StaleForm;

impl IntoResponse for StaleForm {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            "the form is stale or not from this site: reload the page and try again",
        )
            .into_response()
    }
}

/// A form that carries only the CSRF value.
#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

impl CsrfForm {
    /// The value sent.
    pub(super) fn value(&self) -> &str {
        &self.csrf
    }
}

impl FromRequest<AppState> for CsrfForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let Form(form) = Form::<CsrfForm>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(form)
    }
}

/// The `Set-Cookie` header that signs `token` in.
pub(super) fn sign_in_cookie(token: &str) -> (axum::http::HeaderName, HeaderValue) {
    let cookie = format!("{COOKIE_NAME}={token}; Path=/admin; HttpOnly; SameSite=Strict");
    (
        SET_COOKIE,
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("")),
    )
}

/// The `Set-Cookie` header that signs out.
pub(super) fn sign_out_cookie() -> (axum::http::HeaderName, HeaderValue) {
    (
        SET_COOKIE,
        HeaderValue::from_static("gk_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_must_match_exactly() {
        let token = "header.payload.signature";
        let session = AdminSession {
            claims: Claims {
                sub: "admin".into(),
                role: Role::Admin,
                exp: 0,
                iat: 0,
                uid: None,
                email: None,
            },
            csrf: csrf_of(token),
        };
        assert_eq!(session.csrf.len(), 32);
        assert!(session.check_csrf(&csrf_of(token)).is_ok());
        let expected = csrf_of(token);
        let mut flipped = expected.clone().into_bytes();
        flipped[31] = if flipped[31] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        for sent in [
            "",
            &expected[..31],
            &format!("{expected}0"),
            &flipped,
            &csrf_of("another.token.value"),
        ] {
            assert!(session.check_csrf(sent).is_err(), "{sent:?}");
        }
    }
}
