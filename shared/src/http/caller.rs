use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::error::Error;

/// Who sent a request, for what is scoped per caller (idempotency keys). On AWS it is the IAM
/// principal that signed the request (`requestContext.authorizer.iam.userArn`, with
/// `AuthType=AWS_IAM`); with no principal (`quiver-local serve`, `AuthType=NONE`) it is the
/// anonymous caller `""`, whom every unsigned request shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    /// The caller of a request with these extensions.
    pub fn of(extensions: &http::Extensions) -> Caller {
        #[cfg(feature = "lambda")]
        if let Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) = extensions.get() {
            let iam = ctx.authorizer.as_ref().and_then(|a| a.iam.as_ref());
            if let Some(arn) = iam.and_then(|i| i.user_arn.as_deref()) {
                return Caller(arn.to_string());
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
