"""moto's server with IAM enforced from its first request, for `quiver-local rehearse`.

    python moto_iam.py serve HOST PORT ADMIN_FILE DENIALS_FILE
        Creates the admin user in-process (no request goes unchecked), writes its access key to
        ADMIN_FILE as JSON, then serves S3, Secrets Manager, IAM and STS on HOST:PORT. Every request
        that IAM refuses is appended to DENIALS_FILE as one JSON line: the caller's access key,
        the action, the resource and moto's error class.
    python moto_iam.py grant ENDPOINT < roles.json
        Signed by the admin: creates each role with its inline policy, assumes it as Lambda would,
        and prints the temporary credentials as JSON, by role name.

moto evaluates identity policies (Action, NotAction, Resource, Effect) for the caller's access
key: an IAM user's or an assumed role's (the session token is checked). Three places where it
differs from AWS in a way that would make a correct policy fail here are corrected below, each
asserting the moto internals it relies on so that an upgrade that moves them fails loudly:

- S3 requests are authorized under the API operation's name (s3:ListObjectsV2, s3:HeadBucket,
  s3:HeadObject), which IAM does not know; AWS checks the IAM action (s3:ListBucket, s3:GetObject).
- Secrets Manager requests are checked against resource "*", so a policy scoped to a secret's
  ARN (SAM's AWSSecretsManagerGetSecretValuePolicy) never matches; here the resource is the ARN
  of the request's SecretId.
- An access-denied error for S3 does not say which action was refused; the denial log does.

Not enforced by moto, so not proved by the rehearsal: policy Conditions other than StringEquals
(s3:prefix's StringLike is ignored), resource-based policies (the bucket policy), permission
boundaries, SCPs, and KMS.
"""

import json
import os
import sys

ACCOUNT = "123456789012"
ADMIN = "quiver-rehearsal-admin"


# The IAM action that authorizes each S3 API operation, where the two names differ
# (https://docs.aws.amazon.com/AmazonS3/latest/API/using-with-s3-policy-actions.html). An
# operation missing here is checked under its own name, which IAM does not grant: the rehearsal
# then fails and names it, rather than passing quietly.
S3_IAM_ACTIONS = {
    "HeadBucket": "ListBucket",
    "ListObjects": "ListBucket",
    "ListObjectsV2": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "ListMultipartUploads": "ListBucketMultipartUploads",
    "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "CopyObject": "PutObject",
    "ListParts": "ListMultipartUploadParts",
    "DeleteObjects": "DeleteObject",
}


def s3_iam_action(operation):
    return S3_IAM_ACTIONS.get(operation, operation)


def serve(host, port, admin_file, denials_file):
    # Read by moto.settings at import: enforcement starts with the first request.
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    from moto import settings
    from moto.core import authorization
    from moto.iam.models import iam_backends
    from moto.iam import access_control
    from moto.secretsmanager import models as sm_models
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.server import main

    assert settings.INITIAL_NO_AUTH_ACTION_COUNT == 0, "moto did not read INITIAL_NO_AUTH_ACTION_COUNT"

    # S3 requests are authorized under their API operation's name; IAM's names differ.
    assert access_control.S3IAMRequest.__init__.__code__.co_varnames[:8] == ("self", "account_id", "method", "path", "data", "body", "headers", "action"), "moto's S3IAMRequest changed"

    class S3IAMActionRequest(access_control.S3IAMRequest):
        def __init__(self, **kw):
            kw["action"] = s3_iam_action(kw["action"])
            super().__init__(**kw)

    access_control.S3IAMRequest = S3IAMActionRequest

    # A Secrets Manager request's resource is the secret it names.
    assert not hasattr(SecretsManagerResponse, "_determine_resource"), "moto now resolves Secrets Manager resources itself; drop this patch"

    def secret_resource(self):
        try:
            secret_id = json.loads(self.body or "{}").get("SecretId")
        except ValueError:
            secret_id = None
        if not secret_id:
            return "*"
        backend = sm_models.secretsmanager_backends[self.current_account][self.region]
        secret = backend.secrets.get(secret_id)
        # A secret that does not exist yet is named by the ARN a caller would have to be granted.
        return secret.arn if secret is not None else f"arn:aws:secretsmanager:{self.region}:{self.current_account}:secret:{secret_id}"

    SecretsManagerResponse._determine_resource = secret_resource

    # Every refusal, with the action and resource, in the denial log.
    mixin = authorization.ActionAuthenticatorMixin
    check = mixin._authenticate_and_authorize_action

    def logged(self, iam_request_cls, resource="*"):
        try:
            return check(self, iam_request_cls, resource)
        except Exception as e:
            auth = self.headers.get("Authorization", "")
            scope = auth.partition("Credential=")[2].partition(",")[0].split("/")
            service = scope[3] if len(scope) > 3 else "?"
            action = self._get_action()
            if service == "s3":
                action = s3_iam_action(action)
            record = {
                "access_key": scope[0],
                "action": f"{service}:{action}",
                "resource": resource,
                "error": type(e).__name__,
            }
            with open(denials_file, "a") as log:
                log.write(json.dumps(record) + "\n")
            raise

    mixin._authenticate_and_authorize_action = logged

    iam = iam_backends[ACCOUNT]["aws"]
    iam.create_user("us-east-1", ADMIN)
    iam.put_user_policy(ADMIN, "admin", json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(ADMIN)
    with open(admin_file + ".tmp", "w") as f:
        json.dump({"key": key.access_key_id, "secret": key.secret_access_key, "arn": f"arn:aws:iam::{ACCOUNT}:user/{ADMIN}"}, f)
    os.rename(admin_file + ".tmp", admin_file)

    main(["-H", host, "-p", str(port)])


def grant(endpoint):
    import boto3

    spec = json.load(sys.stdin)
    session = boto3.session.Session(aws_access_key_id=spec["admin"]["key"], aws_secret_access_key=spec["admin"]["secret"], region_name="us-east-1")
    iam = session.client("iam", endpoint_url=endpoint)
    sts = session.client("sts", endpoint_url=endpoint)
    out = {}
    for role in spec["roles"]:
        # Lambda assumes the execution role; here the admin stands in for it (moto checks the
        # trust policy against the caller's ARN).
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com", "AWS": spec["admin"]["arn"]}, "Action": "sts:AssumeRole"}],
        }
        arn = iam.create_role(RoleName=role["name"], AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        # A function without Policies gets a role without a policy: every request is refused.
        if role["policy"]["Statement"]:
            iam.put_role_policy(RoleName=role["name"], PolicyName="template", PolicyDocument=json.dumps(role["policy"]))
        creds = sts.assume_role(RoleArn=arn, RoleSessionName=role["session"])["Credentials"]
        out[role["name"]] = {"key": creds["AccessKeyId"], "secret": creds["SecretAccessKey"], "token": creds["SessionToken"]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"] and len(sys.argv) == 6:
        serve(*sys.argv[2:])
    elif sys.argv[1:2] == ["grant"] and len(sys.argv) == 3:
        grant(sys.argv[2])
    else:
        sys.exit(__doc__)
