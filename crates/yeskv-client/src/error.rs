//! The one error type of the client crate.

use yeskv_core::Datatype;

/// Everything that can go wrong talking to a yeskv node.
///
/// [`Error::is_retryable`] tells whether trying again (possibly on another node) may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The node answered with a non-success status; `reason` is the `error` field of its JSON body
    /// (or the body text, or the status's canonical reason when the body says nothing).
    #[error("server said {status}: {reason}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// Why, as the server put it.
        reason: String,
    },
    /// No connection could be made; the request was certainly not sent, so it is safe to retry
    /// anywhere, even for a non-idempotent write.
    #[error("cannot connect to {0}")]
    Connect(String),
    /// The connection failed while the request or response was in flight: the server may or may
    /// not have applied the request.
    #[error("transport error: {0}")]
    Transport(String),
    /// The request did not complete within the client's per-request timeout.
    #[error("request timed out")]
    Timeout,
    /// The node answered something this client does not understand.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// A node URL could not be used.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The caller passed something the client can not send (an empty key, a context token that
    /// is not a valid header value, ...). Nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A data-type read found another type than the handle's (a counter read through
    /// `Client::cart`, ...).
    #[error("the key holds a {found}, not a {expected}")]
    WrongDatatype {
        /// The handle's type.
        expected: Datatype,
        /// The type the server answered.
        found: Datatype,
    },
}

impl Error {
    /// Whether the same request may succeed if tried again later or on another node: connection
    /// failures, timeouts, and the statuses that mean "overloaded or not ready" (408, 429, 502,
    /// 503, 504). Note that retrying a write after [`Error::Transport`] or [`Error::Timeout`] may
    /// apply it twice (as two siblings when it carries no context).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { status, .. } => matches!(status, 408 | 429 | 502 | 503 | 504),
            Error::Connect(_) | Error::Transport(_) | Error::Timeout => true,
            Error::InvalidResponse(_)
            | Error::InvalidUrl(_)
            | Error::InvalidArgument(_)
            | Error::WrongDatatype { .. } => false,
        }
    }

    /// The HTTP status when the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server refused the request as conflicting with the bucket (HTTP 409): a
    /// data-type operation on a bucket of another type or a plain one, a plain request on a
    /// data-type bucket, a change of `datatype` of a bucket holding data. (A plain key never
    /// refuses a write for its number of siblings.) Retrying the same request will not help.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// The server's reason, for an [`Error::Http`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Http { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Builds an [`Error::Http`] from a status and a response body, taking the reason from a JSON
    /// body `{"error": "..."}` when there is one.
    pub(crate) fn from_response(status: u16, canonical: Option<&str>, body: &[u8]) -> Error {
        /// Longest non-JSON body quoted in an error message.
        const QUOTED_BODY_LEN_MAX: usize = 200;

        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: String,
        }
        let reason = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => parsed.error,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() {
                    canonical.unwrap_or("no reason given").to_string()
                } else {
                    let mut end = text.len().min(QUOTED_BODY_LEN_MAX);
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text[..end].to_string()
                }
            }
        };
        Error::Http { status, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_comes_from_json_body() {
        let error = Error::from_response(
            400,
            Some("Bad Request"),
            br#"{"error": "r must be between 1 and n (3)"}"#,
        );
        assert_eq!(
            error.to_string(),
            "server said 400: r must be between 1 and n (3)"
        );
        assert!(!error.is_retryable());
    }

    #[test]
    fn reason_falls_back_to_text_then_canonical() {
        let error = Error::from_response(502, Some("Bad Gateway"), b"upstream down\n");
        assert_eq!(error.to_string(), "server said 502: upstream down");
        assert!(error.is_retryable());
        let error = Error::from_response(503, Some("Service Unavailable"), b"");
        assert_eq!(error.to_string(), "server said 503: Service Unavailable");
    }

    #[test]
    fn conflict_is_409_with_the_reason() {
        let error = Error::from_response(
            409,
            None,
            br#"{"error":"\"incr\" of a counter on a cart bucket"}"#,
        );
        assert!(error.is_conflict());
        assert!(!error.is_retryable());
        assert_eq!(
            error.reason(),
            Some("\"incr\" of a counter on a cart bucket")
        );
        assert_eq!(Error::Timeout.reason(), None);
    }
}
