use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::error::Error;

/// Who sent a request, for what is scoped per caller (idempotency keys). On AWS it is the IAM
/// principal that signed the request (`requestContext.authorizer.iam.userArn`, with
/// `AuthType=AWS_IAM`); with no principal (`quiver-local serve`, `AuthType=NONE`) it is the
/// anonymous caller `""`, whom every unsigned request shares.
///
/// An assumed role's sessions are one caller: `arn:aws:sts::<account>:assumed-role/<role>/<session>`
/// is scoped as `…:assumed-role/<role>`. SDKs name a new session when they refresh credentials
/// (botocore's `botocore-session-<time>`, say), and a retry after a refresh is the same client
/// retrying; the role's sessions share its permissions, so nothing is shown to anyone who could
/// not have written it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    /// The scope of a principal's ARN: an assumed role's session name is dropped.
    pub fn from_arn(arn: &str) -> Caller {
        let scope = match arn.split_once(":assumed-role/") {
            Some((head, rest)) => match rest.split_once('/') {
                Some((role, _session)) => format!("{head}:assumed-role/{role}"),
                None => arn.to_string(),
            },
            None => arn.to_string(),
        };
        Caller(scope)
    }

    /// The caller of a request with these extensions.
    pub fn of(extensions: &http::Extensions) -> Caller {
        #[cfg(feature = "lambda")]
        if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) = extensions.get() {
            let iam = ctx.authorizer.as_ref().and_then(|a| a.iam.as_ref());
            if let Some(arn) = iam.and_then(|i| i.user_arn.as_deref()) {
                return Caller::from_arn(arn);
            }
        }
        #[cfg(not(feature = "lambda"))]
        let _ = extensions;
        Caller::default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Ok(Caller::of(&parts.extensions))
    }
}

#[cfg(test)]
mod tests {
    use super::Caller;

    /// Issue 29, item 10: a retry after a credential refresh (a new session name) is the same
    /// caller; another role, or an IAM user, is not.
    #[test]
    fn an_assumed_roles_sessions_are_one_caller() {
        let a =
            Caller::from_arn("arn:aws:sts::123456789012:assumed-role/ingest/botocore-session-1");
        let b =
            Caller::from_arn("arn:aws:sts::123456789012:assumed-role/ingest/botocore-session-2");
        assert_eq!(a, b);
        assert_eq!(a.0, "arn:aws:sts::123456789012:assumed-role/ingest");
        let other =
            Caller::from_arn("arn:aws:sts::123456789012:assumed-role/admin/botocore-session-1");
        assert_ne!(a, other);
        let user = "arn:aws:iam::123456789012:user/alice";
        assert_eq!(Caller::from_arn(user).0, user);
    }
}
