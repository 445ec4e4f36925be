"""Add the dashboard's hosting to the packaged template: a private S3 bucket behind CloudFront, and the API's
custom domain on the same site (the refresh cookie is SameSite=Strict: the dashboard and the API must share a site).

The bucket blocks every kind of public access and is readable only by the distribution (origin access control,
SigV4, the distribution's ARN in the bucket policy's condition). Viewers get HTTPS only (HTTP redirects), and every
answer carries the dashboard's security headers, as its own preview server sends them (`dashboard/vite.config.ts`,
printed by `dashboard/scripts/security-headers.mjs` for the API the bundle calls), so the CSP the end-to-end tests
run under is the one users get.
Routes of the single-page app that are not files answer `index.html`.

    python -m infra.dashboard_site build/sam.json build/dashboard-security-headers.json --api-url https://api.orochi.example

Its name is the prod stage's allowed origin, and the API's is the host of the URL the bundle calls (template
parameters with defaults, each with its ACM certificate).

The bundle itself is uploaded after the stack is deployed (README: "Shipping the dashboard").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# AWS's managed cache policy "CachingOptimized" (the same id in every account).
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ORIGIN_ID = "dashboard-bucket"
_CERTIFICATE = "arn:aws[a-z-]*:acm:{region}:[0-9]{{12}}:certificate/.+"
API = "RestAPI"  # chalice's name for the API in the template


def security_headers_config(headers: dict[str, str]) -> dict[str, Any]:
    """A ResponseHeadersPolicyConfig that sets exactly `headers`, overriding what the origin sends."""
    security: dict[str, Any] = {}
    custom = []
    for name, value in headers.items():
        key = name.lower()
        if key == "content-security-policy":
            security["ContentSecurityPolicy"] = {"ContentSecurityPolicy": value, "Override": True}
        elif key == "x-content-type-options" and value.lower() == "nosniff":
            security["ContentTypeOptions"] = {"Override": True}
        elif key == "x-frame-options" and value.upper() in ("DENY", "SAMEORIGIN"):
            security["FrameOptions"] = {"FrameOption": value.upper(), "Override": True}
        elif key == "referrer-policy":
            security["ReferrerPolicy"] = {"ReferrerPolicy": value, "Override": True}
        elif key == "strict-transport-security":
            security["StrictTransportSecurity"] = _hsts(value)
        else:
            custom.append({"Header": name, "Value": value, "Override": True})
    security.setdefault("StrictTransportSecurity", _hsts("max-age=63072000; includeSubDomains; preload"))
    config: dict[str, Any] = {"Name": "orochi-dashboard-security-headers", "SecurityHeadersConfig": security}
    if custom:
        config["CustomHeadersConfig"] = {"Items": custom}
    return config


def _hsts(value: str) -> dict[str, Any]:
    parts = [p.strip().lower() for p in value.split(";")]
    max_age = next(int(p.split("=", 1)[1]) for p in parts if p.startswith("max-age="))
    return {"AccessControlMaxAgeSec": max_age, "IncludeSubdomains": "includesubdomains" in parts,
            "Preload": "preload" in parts, "Override": True}


def parameters(domain: str, api_domain: str) -> dict[str, Any]:
    """The dashboard's name (the API's allowed origin, so that CORS works), the API's (the host the bundle calls, on
    the same site, so that the refresh cookie flows) and their certificates, given at deploy time."""
    return {
        "DashboardDomain": {"Type": "String", "Default": domain,
                            "Description": "The dashboard's host name: the prod stage's ALLOWED_ORIGINS"},
        "DashboardCertificateArn": {"Type": "String", "AllowedPattern": _CERTIFICATE.format(region="us-east-1"),
                                    "Description": "An ACM certificate for DashboardDomain, in us-east-1 (CloudFront's)"},
        "ApiDomain": {"Type": "String", "Default": api_domain,
                      "Description": "The API's host name, on the dashboard's site: the host of DASHBOARD_API_URL"},
        "ApiCertificateArn": {"Type": "String", "AllowedPattern": _CERTIFICATE.format(region="us-east-1"),
                              "Description": "An ACM certificate for ApiDomain, in us-east-1 (an edge-optimized API's)"},
    }


def api_domain(api: dict[str, Any]) -> dict[str, Any]:
    """The API's custom domain (SAM's `Domain` of the API), at the root: https://<ApiDomain>/v1/…"""
    return {"DomainName": {"Ref": "ApiDomain"}, "CertificateArn": {"Ref": "ApiCertificateArn"},
            "EndpointConfiguration": api["Properties"]["EndpointConfiguration"], "SecurityPolicy": "TLS_1_2",
            "BasePath": ["/"]}


def resources(headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Resources, Outputs) of the dashboard's hosting."""
    distribution_arn = {"Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${DashboardDistribution}"}
    spa_fallback = [{"ErrorCode": code, "ResponseCode": 200, "ResponsePagePath": "/index.html", "ErrorCachingMinTTL": 10}
                    for code in (403, 404)]
    found = {
        "DashboardBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                   "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                "VersioningConfiguration": {"Status": "Enabled"},
            },
        },
        "DashboardBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": {"Ref": "DashboardBucket"},
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Sid": "CloudFrontReadsThroughOriginAccessControl", "Effect": "Allow",
                     "Principal": {"Service": "cloudfront.amazonaws.com"}, "Action": "s3:GetObject",
                     "Resource": {"Fn::Sub": "${DashboardBucket.Arn}/*"},
                     "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn}}},
                    {"Sid": "HttpsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": [{"Fn::GetAtt": ["DashboardBucket", "Arn"]}, {"Fn::Sub": "${DashboardBucket.Arn}/*"}],
                     "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
                ]},
            },
        },
        "DashboardOriginAccessControl": {
            "Type": "AWS::CloudFront::OriginAccessControl",
            "Properties": {"OriginAccessControlConfig": {
                "Name": "orochi-dashboard", "OriginAccessControlOriginType": "s3",
                "SigningBehavior": "always", "SigningProtocol": "sigv4"}},
        },
        "DashboardSecurityHeaders": {
            "Type": "AWS::CloudFront::ResponseHeadersPolicy",
            "Properties": {"ResponseHeadersPolicyConfig": security_headers_config(headers)},
        },
        "DashboardDistribution": {
            "Type": "AWS::CloudFront::Distribution",
            "Properties": {"DistributionConfig": {
                "Enabled": True,
                "Comment": "Orochi DB dashboard",
                "Aliases": [{"Ref": "DashboardDomain"}],
                "ViewerCertificate": {"AcmCertificateArn": {"Ref": "DashboardCertificateArn"},
                                      "SslSupportMethod": "sni-only", "MinimumProtocolVersion": "TLSv1.2_2021"},
                "HttpVersion": "http2and3",
                "IPV6Enabled": True,
                "PriceClass": "PriceClass_100",
                "DefaultRootObject": "index.html",
                "Origins": [{
                    "Id": ORIGIN_ID,
                    "DomainName": {"Fn::GetAtt": ["DashboardBucket", "RegionalDomainName"]},
                    "OriginAccessControlId": {"Fn::GetAtt": ["DashboardOriginAccessControl", "Id"]},
                    "S3OriginConfig": {"OriginAccessIdentity": ""},
                }],
                "DefaultCacheBehavior": {
                    "TargetOriginId": ORIGIN_ID,
                    "ViewerProtocolPolicy": "redirect-to-https",
                    "AllowedMethods": ["GET", "HEAD"],
                    "CachedMethods": ["GET", "HEAD"],
                    "Compress": True,
                    "CachePolicyId": CACHING_OPTIMIZED,
                    "ResponseHeadersPolicyId": {"Ref": "DashboardSecurityHeaders"},
                },
                "CustomErrorResponses": spa_fallback,
            }},
        },
    }
    outputs = {
        "DashboardBucketName": {"Value": {"Ref": "DashboardBucket"}},
        "DashboardDistributionId": {"Value": {"Ref": "DashboardDistribution"}},
        "DashboardUrl": {"Value": {"Fn::Sub": "https://${DashboardDomain}"}},
        "DashboardDistributionDomainName": {"Value": {"Fn::GetAtt": ["DashboardDistribution", "DomainName"]},
                                            "Description": "where DashboardDomain's CNAME (or alias record) points"},
    }
    return found, outputs


def add_to(template: dict[str, Any], headers: dict[str, str], *, domain: str, api_url: str) -> None:
    api_host = urlparse(api_url).netloc
    if _site(api_host) != _site(domain):
        raise SystemExit(f"the API ({api_host}) must be on the dashboard's site ({domain}) for its SameSite=Strict "
                         "refresh cookie to flow: set DASHBOARD_API_URL to a host of that site")
    found, outputs = resources(headers)
    outputs["ApiUrl"] = {"Value": {"Fn::Sub": "https://${ApiDomain}"}, "Description": "what the dashboard calls"}
    sections = {"Parameters": parameters(domain, api_host), "Resources": found, "Outputs": outputs}
    clash = [name for section, added in sections.items() for name in added if name in template.get(section, {})]
    api = template["Resources"][API]
    if clash or "Domain" in api["Properties"]:
        raise SystemExit(f"the template already has {sorted(clash) or 'a domain for the API'}")
    for section, added in sections.items():
        template.setdefault(section, {}).update(added)
    api["Properties"]["Domain"] = api_domain(api)


def _site(host: str) -> str:
    """A host's site as its last two labels (enough for orochi.example; a suffix like co.uk needs the PSL)."""
    return ".".join(host.split(":")[0].split(".")[-2:])


def prod_origin(config: Path) -> str:
    """The host of the prod stage's first allowed origin, from .chalice/config.json."""
    origins = json.loads(config.read_text())["stages"]["prod"]["environment_variables"]["ALLOWED_ORIGINS"]
    return urlparse(origins.split(",")[0].strip()).netloc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path, help="the packaged template, changed in place")
    parser.add_argument("headers", type=Path, help="the dashboard's security headers (a JSON object)")
    parser.add_argument("--config", type=Path, default=Path(".chalice/config.json"),
                        help="chalice's config: the dashboard's domain is the prod stage's allowed origin")
    parser.add_argument("--api-url", required=True, help="the API's URL the dashboard is built to call")
    args = parser.parse_args()
    template = json.loads(args.template.read_text())
    add_to(template, json.loads(args.headers.read_text()), domain=prod_origin(args.config), api_url=args.api_url)
    args.template.write_text(json.dumps(template, indent=2) + "\n")


if __name__ == "__main__":
    main()
