//! Errors on the wire: a failed call answers with a gRPC status whose `grpc-status-details-bin`
//! is a `google.rpc.Status` (the richer error model every gRPC library decodes: Go's
//! `status.FromError(err).Details()`, Python's `grpc_status.rpc_status.from_call`, Java's
//! `StatusProto.fromThrowable`, Node's `@grpc/grpc-js` with `google-rpc` helpers) carrying a
//! [`pb::HostErrorDetail`] packed as a `google.protobuf.Any` with the type URL
//! [`HOST_ERROR_DETAIL_TYPE_URL`].
//!
//! Decoding also accepts the older form, a bare `HostErrorDetail` as the whole details.

use std::time::Duration;

use prost::Message;
use tonic::Code;

use super::pb;
use crate::{HostError, HostErrorKind};

/// The type URL of a [`pb::HostErrorDetail`] packed as a `google.protobuf.Any`.
pub const HOST_ERROR_DETAIL_TYPE_URL: &str =
    "type.googleapis.com/goatkit.plugin.v1.HostErrorDetail";

/// The fully qualified name of [`pb::HostErrorDetail`]: what an `Any`'s type URL ends with.
const HOST_ERROR_DETAIL_NAME: &str = "goatkit.plugin.v1.HostErrorDetail";

/// The two well-known messages of gRPC's richer error model, as this crate encodes them (the
/// same field numbers as `google/rpc/status.proto` and `google/protobuf/any.proto`).
pub mod rpc {
    /// `google.rpc.Status`: what `grpc-status-details-bin` holds.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// The gRPC status code (`google.rpc.Code`).
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// The message, in English, for developers.
        #[prost(string, tag = "2")]
        pub message: String,
        /// Typed details, each packed as an `Any`.
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    /// `google.protobuf.Any`: a message with the URL of its type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        /// `type.googleapis.com/<fully qualified message name>`.
        #[prost(string, tag = "1")]
        pub type_url: String,
        /// The encoded message.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}

/// The gRPC code a host error answers with.
fn code(kind: HostErrorKind) -> Code {
    match kind {
        HostErrorKind::PermissionDenied => Code::PermissionDenied,
        HostErrorKind::RateLimited => Code::ResourceExhausted,
        HostErrorKind::NotFound => Code::NotFound,
        HostErrorKind::InvalidInput => Code::InvalidArgument,
        HostErrorKind::Timeout => Code::DeadlineExceeded,
        HostErrorKind::Unavailable => Code::Unavailable,
        HostErrorKind::CallDepthExceeded => Code::FailedPrecondition,
        HostErrorKind::PluginFailed => Code::Aborted,
        HostErrorKind::Backend => Code::Internal,
    }
}

/// The gRPC status a failed host call answers with: a code generic clients understand, the
/// message, and the exact error as a [`pb::HostErrorDetail`] packed as an `Any` in a
/// `google.rpc.Status` in the details.
pub fn host_error_to_status(error: &HostError) -> tonic::Status {
    let code = code(error.kind());
    let message = error.to_string();
    let details = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![rpc::Any {
            type_url: HOST_ERROR_DETAIL_TYPE_URL.to_owned(),
            value: pb::HostErrorDetail::from(error).encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, message, details.encode_to_vec().into())
}

/// The host error in a status's details, if it carries one: a [`pb::HostErrorDetail`] packed
/// in a `google.rpc.Status` (any `Any` whose type URL names `goatkit.plugin.v1.HostErrorDetail`),
/// or, the older form, a bare `HostErrorDetail`.
pub fn host_error_from_status(status: &tonic::Status) -> Option<HostError> {
    let details = status.details();
    if details.is_empty() {
        return None;
    }
    let known = |detail: pb::HostErrorDetail| (!detail.kind.is_empty()).then_some(detail);
    let packed = rpc::Status::decode(details).ok().and_then(|rich| {
        rich.details
            .iter()
            .filter(|any| {
                any.type_url
                    .rsplit('/')
                    .next()
                    .is_some_and(|name| name == HOST_ERROR_DETAIL_NAME)
            })
            .find_map(|any| pb::HostErrorDetail::decode(any.value.as_slice()).ok())
            .and_then(known)
    });
    packed
        .or_else(|| pb::HostErrorDetail::decode(details).ok().and_then(known))
        .map(HostError::from)
}

/// The host error a failed host call's status stands for: the detail when present, else a
/// mapping of the status code.
pub fn status_to_host_error(status: &tonic::Status) -> HostError {
    if let Some(error) = host_error_from_status(status) {
        return error;
    }
    let message = status.message().to_owned();
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => HostError::PermissionDenied {
            permission: String::new(),
            reason: message,
        },
        Code::ResourceExhausted => HostError::RateLimited {
            limit: message,
            retry_after: Duration::from_secs(1),
        },
        Code::NotFound => HostError::NotFound(message),
        Code::InvalidArgument => HostError::InvalidInput(message),
        Code::DeadlineExceeded | Code::Cancelled => HostError::Timeout(message),
        Code::Unavailable => HostError::Unavailable(message),
        _ => HostError::Backend(format!("{}: {message}", status.code())),
    }
}

/// A status as a `Calls` stream carries it (in a [`pb::HostReply`] or a
/// [`pb::StreamedResult`]): code, message and the details `grpc-status-details-bin` would hold.
impl From<&tonic::Status> for pb::StreamStatus {
    fn from(status: &tonic::Status) -> Self {
        Self {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: status.details().to_vec(),
        }
    }
}

/// The status a [`pb::StreamStatus`] stands for (an unknown code is `UNKNOWN`).
impl From<pb::StreamStatus> for tonic::Status {
    fn from(status: pb::StreamStatus) -> Self {
        tonic::Status::with_details(
            Code::from_i32(status.code),
            status.message,
            status.details.into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_round_trip_through_a_status() {
        for error in [
            HostError::denied("http", "host `x` is not in the http scope"),
            HostError::RateLimited {
                limit: "max_calls_per_second".into(),
                retry_after: Duration::from_millis(20),
            },
            HostError::NotFound("config key `k`".into()),
            HostError::Backend("disk full".into()),
        ] {
            let status = host_error_to_status(&error);
            assert_eq!(status.message(), error.to_string());
            assert_eq!(status_to_host_error(&status), error);
        }
        let bare = tonic::Status::unavailable("down");
        assert_eq!(host_error_from_status(&bare), None);
        assert_eq!(
            status_to_host_error(&bare),
            HostError::Unavailable("down".into())
        );
        assert_eq!(
            host_error_to_status(&HostError::denied("db", "x")).code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn a_status_on_the_calls_stream_keeps_its_code_message_and_detail() {
        let error = HostError::denied("db:write", "read-only plugin");
        let status = host_error_to_status(&error);
        let carried = pb::StreamStatus::from(&status);
        assert_eq!(carried.code, Code::PermissionDenied as i32);
        let back = tonic::Status::from(carried);
        assert_eq!(back.code(), Code::PermissionDenied);
        assert_eq!(back.message(), status.message());
        assert_eq!(status_to_host_error(&back), error);
        let odd = tonic::Status::from(pb::StreamStatus {
            code: 99,
            message: "m".into(),
            details: Vec::new(),
        });
        assert_eq!(odd.code(), Code::Unknown);
    }

    #[test]
    fn the_details_are_a_google_rpc_status_with_the_detail_packed_as_any() {
        let error = HostError::RateLimited {
            limit: "max_db_queries_per_min".into(),
            retry_after: Duration::from_millis(1500),
        };
        let status = host_error_to_status(&error);
        let rich = rpc::Status::decode(status.details()).unwrap();
        assert_eq!(rich.code, Code::ResourceExhausted as i32);
        assert_eq!(rich.message, status.message());
        assert_eq!(rich.details.len(), 1);
        assert_eq!(
            rich.details[0].type_url,
            "type.googleapis.com/goatkit.plugin.v1.HostErrorDetail"
        );
        let detail = pb::HostErrorDetail::decode(rich.details[0].value.as_slice()).unwrap();
        assert_eq!(
            (
                detail.kind.as_str(),
                detail.limit.as_str(),
                detail.retry_after_ms
            ),
            ("rate_limited", "max_db_queries_per_min", 1500)
        );
    }

    #[test]
    fn the_older_bare_detail_and_other_type_url_hosts_still_decode() {
        let error = HostError::denied("db:write", "writes need write access");
        let bare = tonic::Status::with_details(
            Code::PermissionDenied,
            "denied",
            pb::HostErrorDetail::from(&error).encode_to_vec().into(),
        );
        assert_eq!(host_error_from_status(&bare), Some(error.clone()));

        // Any type URL host is allowed, as long as the last segment names the message; other
        // details (e.g. a google.rpc.ErrorInfo added by a proxy) are skipped.
        let rich = rpc::Status {
            code: Code::PermissionDenied as i32,
            message: "denied".into(),
            details: vec![
                rpc::Any {
                    type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                    value: vec![10, 1, b'x'],
                },
                rpc::Any {
                    type_url: "example.com/types/goatkit.plugin.v1.HostErrorDetail".into(),
                    value: pb::HostErrorDetail::from(&error).encode_to_vec(),
                },
            ],
        };
        let status = tonic::Status::with_details(
            Code::PermissionDenied,
            "denied",
            rich.encode_to_vec().into(),
        );
        assert_eq!(host_error_from_status(&status), Some(error));

        let unrelated = tonic::Status::with_details(
            Code::Internal,
            "boom",
            rpc::Status {
                code: Code::Internal as i32,
                message: "boom".into(),
                details: Vec::new(),
            }
            .encode_to_vec()
            .into(),
        );
        assert_eq!(host_error_from_status(&unrelated), None);
        let garbage = tonic::Status::with_details(Code::Internal, "x", vec![0xff, 0xff].into());
        assert_eq!(host_error_from_status(&garbage), None);
    }
}
