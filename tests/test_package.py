"""`make package`: the prod SAM template declares the table, the job queues, the reaper's schedule and
least-privilege roles, wires the functions to them, and passes cfn-lint.

The packaging runs once per module: about 3 s when .chalice/deployments/ already holds chalice's zip for
this code, 15-40 s otherwise, since chalice keys that cache on requirements.txt, app.py and chalicelib/ and
downloads the Lambda (manylinux) wheels from PyPI again whenever one of them changed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import zipfile
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from chalicelib.settings import DEFAULT_REGIONS, Settings
from chalicelib.store.table import Item

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)

# The DynamoDB and SQS operations the deployed code performs, as IAM actions. A TransactWriteItems call
# has no IAM action of its own: each item is authorized as Put/Update/DeleteItem or ConditionCheckItem.
ACTIONS_USED = {
    "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem",
    "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem", "dynamodb:BatchWriteItem", "sqs:SendMessage",
}

# The pynamodb calls (on a Model, a TransactWrite or a batch) that reach DynamoDB, and their IAM actions.
# dict.get/update calls match too; they only repeat actions that are needed anyway.
PYNAMODB_CALLS = {
    "get": "dynamodb:GetItem",
    "refresh": "dynamodb:GetItem",
    "batch_get": "dynamodb:BatchGetItem",
    "query": "dynamodb:Query",
    "count": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "save": "dynamodb:PutItem",
    "update": "dynamodb:UpdateItem",
    "delete": "dynamodb:DeleteItem",
    "condition_check": "dynamodb:ConditionCheckItem",
    "batch_write": "dynamodb:BatchWriteItem",
    "describe_table": "dynamodb:DescribeTable",
    "create_table": "dynamodb:CreateTable",
    "delete_table": "dynamodb:DeleteTable",
}
# Set-up for the local stack and the tests only; never called in Lambda.
LOCAL_ONLY = {"create_table", "create_queues"}
BATCH_OPERATIONS = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage",
                    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}
DASHBOARD_API_URL = "https://api-package-test.orochi.example"  # the API the dashboard bundle is built to call
PSEUDO_PARAMETERS = {"AWS::Region": "us-east-1", "AWS::URLSuffix": "amazonaws.com", "AWS::AccountId": "123456789012"}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "build"
    # `-o` the install stamp: run the packaging with the environment at hand, never pip.
    command = ["make", "--no-print-directory", "-o", f"{VENV}/.installed", f"VENV={VENV}", f"PACKAGE_DIR={out}",
               f"DASHBOARD_API_URL={DASHBOARD_API_URL}", "package"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="module")
def template(build: Path) -> dict[str, Any]:
    return json.loads((build / "sam.json").read_text())


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def the_table(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    tables = resources(template, "AWS::DynamoDB::Table")
    assert len(tables) == 1, f"expected one table, got {sorted(tables)}"
    return next(iter(tables.items()))


def substitute(value: Any) -> str:
    """An Fn::Sub of pseudo parameters, as CloudFormation would resolve it in us-east-1."""
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str), value
    names = re.findall(r"\$\{([^}]*)\}", value["Fn::Sub"])
    assert set(names) <= set(PSEUDO_PARAMETERS), f"unexpected ${{...}} in {value['Fn::Sub']!r}: {names}"
    return re.sub(r"\$\{([^}]*)\}", lambda m: PSEUDO_PARAMETERS[m.group(1)], value["Fn::Sub"])


def regions(template: dict[str, Any]) -> list[str]:
    for function in resources(template, "AWS::Serverless::Function").values():
        assert "REGIONS" not in function["Properties"]["Environment"]["Variables"], "queues follow the default REGIONS"
    return [entry.split(":", 1)[0] for entry in DEFAULT_REGIONS.split(",")]


def test_table_is_on_demand_with_ttl_point_in_time_recovery_and_encryption(template):
    _, table = the_table(template)
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_ttl", "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"]["SSEEnabled"] is True
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_table_keys_and_indexes_are_the_store_models(template):
    _, table = the_table(template)
    properties = table["Properties"]
    schema = Item._get_schema()
    assert sorted(properties["KeySchema"], key=str) == sorted(schema["key_schema"], key=str)
    assert sorted(properties["AttributeDefinitions"], key=str) == sorted(schema["attribute_definitions"], key=str)
    declared = {i["IndexName"]: i for i in properties["GlobalSecondaryIndexes"]}
    assert set(declared) == {"gsi1", "gsi2", "gsi3"}
    for index in schema["global_secondary_indexes"]:
        assert sorted(declared[index["index_name"]]["KeySchema"], key=str) == sorted(index["key_schema"], key=str)
        assert declared[index["index_name"]]["Projection"] == {"ProjectionType": "ALL"}
    assert not properties.get("LocalSecondaryIndexes")


def test_each_region_has_a_fifo_job_queue_with_a_fifo_dead_letter_queue(template):
    queues = resources(template, "AWS::SQS::Queue")
    by_name = {q["Properties"]["QueueName"]: name for name, q in queues.items()}
    expected = regions(template)
    job_queues = {name for name in by_name if not name.endswith("-dlq.fifo")}
    assert job_queues == {f"orochi-jobs-{region}.fifo" for region in expected}
    for region in expected:
        queue = queues[by_name[f"orochi-jobs-{region}.fifo"]]["Properties"]
        assert queue["FifoQueue"] is True
        assert queue["VisibilityTimeout"] == 120
        assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
        target = queue["RedrivePolicy"]["deadLetterTargetArn"]
        assert set(target) == {"Fn::GetAtt"} and target["Fn::GetAtt"][1] == "Arn", target
        dead = queues[target["Fn::GetAtt"][0]]["Properties"]
        assert dead["FifoQueue"] is True and dead["QueueName"] == f"orochi-jobs-{region}-dlq.fifo"
        assert "RedrivePolicy" not in dead
    assert len(queues) == 2 * len(expected)


@pytest.mark.parametrize("handler", ["app.reap", "app.autoscale"])
def test_the_reaper_and_the_autoscaler_run_every_minute(template, handler):
    functions = resources(template, "AWS::Serverless::Function")
    scheduled = [f for f in functions.values() if f["Properties"]["Handler"] == handler]
    assert len(scheduled) == 1
    events = scheduled[0]["Properties"]["Events"].values()
    schedules = [e["Properties"]["Schedule"] for e in events if e["Type"] == "Schedule"]
    assert schedules == ["rate(1 minute)"]


def test_every_function_starts_with_the_table_queues_and_secrets(template):
    table_name, _ = the_table(template)
    queues = {q["Properties"]["QueueName"] for q in resources(template, "AWS::SQS::Queue").values()}
    functions = resources(template, "AWS::Serverless::Function")
    assert {f["Properties"]["Handler"] for f in functions.values()} == {"app.app", "app.reap", "app.autoscale"}
    for name, function in functions.items():
        variables = dict(function["Properties"]["Environment"]["Variables"])
        assert variables["TABLE_NAME"] == {"Ref": table_name}, name
        assert variables["JWT_SECRET"].startswith("{{resolve:secretsmanager:"), name
        assert variables["ENCRYPTION_KEY"].startswith("{{resolve:secretsmanager:"), name
        queue_url_template = substitute(variables["JOB_QUEUE_URL_TEMPLATE"])
        # What CloudFormation resolves, with the secrets standing in for their values: the app must start.
        variables.update(TABLE_NAME="stack-ControlPlaneTable-ABC", JOB_QUEUE_URL_TEMPLATE=queue_url_template,
                         JWT_SECRET="s" * 48, ENCRYPTION_KEY="k1:" + "A" * 43 + "=",
                         **({"METRICS_TOKEN": "m" * 32} if "METRICS_TOKEN" in variables else {}))
        assert all(isinstance(v, str) for v in variables.values()), f"{name}: unresolved {variables}"
        settings = Settings.from_env(variables)
        for region in settings.region_slugs:
            url = settings.job_queue_url(region)
            assert url == f"https://sqs.us-east-1.amazonaws.com/123456789012/orochi-jobs-{region}.fifo"
            assert url.rsplit("/", 1)[1] in queues


def test_each_function_logs_to_its_own_log_group_with_a_retention(template):
    groups = resources(template, "AWS::Logs::LogGroup")
    roles = resources(template, "AWS::IAM::Role")
    for name, function in resources(template, "AWS::Serverless::Function").items():
        group_name = f"/aws/lambda/{function['Properties']['FunctionName']}"
        (group,) = [g for g, r in groups.items() if r["Properties"]["LogGroupName"] == group_name]
        assert groups[group]["Properties"]["RetentionInDays"] > 0
        assert group in function["DependsOn"], f"{name} may run before {group} exists"
        role = roles[function["Properties"]["Role"]["Fn::GetAtt"][0]]
        logs = [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
                if any(a.startswith("logs:") for a in as_list(s["Action"]))]
        assert [s["Resource"] for s in logs] == [{"Fn::GetAtt": [group, "Arn"]}], name


def test_package_time_placeholders_stay_out_of_the_template(build):
    text = (build / "sam.json").read_text()
    for placeholder in ("package-time-placeholder", "sqs.invalid", "pkg:AAAA"):
        assert placeholder not in text


def role_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    roles = resources(template, "AWS::IAM::Role")
    for function in resources(template, "AWS::Serverless::Function").values():
        assert function["Properties"]["Role"]["Fn::GetAtt"][0] in roles
        assert "Policies" not in function["Properties"]
    for name, role in roles.items():
        assert not role["Properties"].get("ManagedPolicyArns"), name
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_roles_name_only_the_table_its_indexes_the_job_queues_and_their_log_groups(template):
    table_name, table = the_table(template)
    indexes = {i["IndexName"] for i in table["Properties"]["GlobalSecondaryIndexes"]}
    job_queues = {name for name, q in resources(template, "AWS::SQS::Queue").items()
                  if not q["Properties"]["QueueName"].endswith("-dlq.fifo")}
    log_groups = set(resources(template, "AWS::Logs::LogGroup"))
    allowed = {
        "dynamodb": [{"Fn::GetAtt": [table_name, "Arn"]}]
        + [{"Fn::Sub": f"${{{table_name}.Arn}}/index/{index}"} for index in indexes],
        "sqs": [{"Fn::GetAtt": [queue, "Arn"]} for queue in job_queues],
        "logs": [{"Fn::GetAtt": [group, "Arn"]} for group in log_groups],
    }
    granted: set[str] = set()
    for role, statement in role_statements(template):
        assert statement["Effect"] == "Allow" and not {"NotAction", "NotResource", "Condition"} & set(statement), role
        actions = as_list(statement["Action"])
        services = {action.split(":", 1)[0] for action in actions}
        assert len(services) == 1 and services <= set(allowed), f"{role}: one service per statement, got {actions}"
        assert not any("*" in action for action in actions), f"{role}: {actions}"
        (service,) = services
        for resource in as_list(statement["Resource"]):
            assert resource in allowed[service], f"{role}: {resource} for {actions}"
        granted |= set(actions)
    assert "dynamodb:Scan" not in granted
    assert {a for a in granted if not a.startswith("logs:")} == ACTIONS_USED
    assert {a for a in granted if a.startswith("logs:")} == {"logs:CreateLogStream", "logs:PutLogEvents"}


def test_every_role_allows_every_call_the_code_makes(template):
    table_name, _ = the_table(template)
    for role in resources(template, "AWS::IAM::Role"):
        allowed = {a for r, s in role_statements(template) if r == role for a in as_list(s["Action"])}
        assert ACTIONS_USED <= allowed, f"{role} lacks {sorted(ACTIONS_USED - allowed)}"
        queries = [s for r, s in role_statements(template) if r == role and "dynamodb:Query" in as_list(s["Action"])]
        for index in ("gsi1", "gsi2", "gsi3"):
            arn = {"Fn::Sub": f"${{{table_name}.Arn}}/index/{index}"}
            assert any(arn in as_list(s["Resource"]) for s in queries), f"{role} cannot query {index}"


def calls(path: Path) -> Iterator[tuple[ast.Call, str]]:
    """Every `x.method(...)` call in `path` outside the local-only set-up functions."""
    tree = ast.parse(path.read_text())
    local_only = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in LOCAL_ONLY]
    skipped = {id(n) for f in local_only for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and id(node) not in skipped:
            yield node, node.func.attr


def actions_in_code() -> set[str]:
    actions: set[str] = set()
    session = botocore.session.get_session()
    dynamodb = {xform_name(op): op for op in session.get_service_model("dynamodb").operation_names}
    for path in sorted((ROOT / "chalicelib" / "store").glob("*.py")):
        for node, method in calls(path):
            if method == "exists" and isinstance(node.func.value, ast.Name):
                actions.add("dynamodb:DescribeTable")  # Model.exists(); `Model.attr.exists()` is a condition
            elif method in PYNAMODB_CALLS:
                actions.add(PYNAMODB_CALLS[method])
            elif method in dynamodb:
                actions.add(f"dynamodb:{dynamodb[method]}")
    sqs = {xform_name(op): op for op in session.get_service_model("sqs").operation_names}
    for node, method in calls(ROOT / "chalicelib" / "jobs.py"):
        if method in sqs:
            actions.add(f"sqs:{BATCH_OPERATIONS.get(sqs[method], sqs[method])}")
    return actions


def test_actions_used_are_what_the_store_and_jobs_modules_call():
    talks_to_aws = re.compile(r"^\s*(import|from) (boto3|pynamodb)\b", re.M)
    outside = [p for p in (ROOT / "chalicelib").rglob("*.py")
               if p.parent.name != "store" and p.name != "jobs.py" and talks_to_aws.search(p.read_text())]
    assert not outside, f"only chalicelib/store and chalicelib/jobs.py talk to AWS: {outside}"
    assert actions_in_code() == ACTIONS_USED


def test_template_passes_cfn_lint(build):
    command = [str(VENV / "bin" / "cfn-lint"), str(build / "sam.json")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"cfn-lint:\n{result.stdout}{result.stderr}"


def test_bundle_ships_bytecode_for_every_module(build: Path) -> None:
    with zipfile.ZipFile(build / "deployment.zip") as bundle:
        names = set(bundle.namelist())
    sources = {name for name in names if name.endswith(".py")}
    assert "app.py" in sources and "chalicelib/web.py" in sources
    missing = {s for s in sources if importlib.util.cache_from_source(s) not in names}
    assert not missing, f"modules without bytecode: {sorted(missing)[:5]}"


def test_answers_api_gateway_gives_itself_keep_the_error_shape(template: dict[str, Any]) -> None:
    answers = {r["Properties"]["ResponseType"]: r["Properties"] for r in resources(template, "AWS::ApiGateway::GatewayResponse").values()}
    assert set(answers) == {"MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"}
    assert answers["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "404"
    for answer in answers.values():
        body = answer["ResponseTemplates"]["application/json"]
        assert '"error":{"code":' in body and '"request_id":"$context.requestId"' in body
        assert answer["ResponseParameters"]["gatewayresponse.header.X-Request-ID"] == "context.requestId"


def agent_queue_actions() -> set[str]:
    """The SQS actions the agent's queue client calls (every call goes through `Queue._call("<operation>", …)`)."""
    tree = ast.parse((ROOT / "kube-agent" / "orochi_agent" / "clients" / "queue.py").read_text())
    sqs = {xform_name(op): op for op in botocore.session.get_session().get_service_model("sqs").operation_names}
    called = {node.args[0].value for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_call"
              and node.args and isinstance(node.args[0], ast.Constant)}
    assert called and called <= set(sqs), called
    return {f"sqs:{BATCH_OPERATIONS.get(sqs[method], sqs[method])}" for method in called}


def test_each_regions_agent_may_work_its_own_job_queue_and_nothing_else(template):
    queues = {q["Properties"]["QueueName"]: name for name, q in resources(template, "AWS::SQS::Queue").items()}
    users = {u["Properties"]["UserName"]: u for u in resources(template, "AWS::IAM::User").values()}
    expected = regions(template)
    assert set(users) == {f"orochi-agent-{region}" for region in expected}
    for region in expected:
        statements = [s for policy in users[f"orochi-agent-{region}"]["Properties"]["Policies"]
                      for s in policy["PolicyDocument"]["Statement"]]
        for statement in statements:
            assert statement["Effect"] == "Allow" and not {"NotAction", "NotResource"} & set(statement)
            assert as_list(statement["Resource"]) == [{"Fn::GetAtt": [queues[f"orochi-jobs-{region}.fifo"], "Arn"]}]
        assert {a for s in statements for a in as_list(s["Action"])} == agent_queue_actions()


def alarms_on(template: dict[str, Any], namespace: str, metric: str) -> list[dict[str, Any]]:
    return [a["Properties"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
            if (a["Properties"]["Namespace"], a["Properties"]["MetricName"]) == (namespace, metric)]


def test_every_alarm_is_one_of_the_known_kinds(template):
    known = {("AWS/SQS", "ApproximateNumberOfMessagesVisible"), ("Orochi/ControlPlane", "AgentHeartbeatAge"),
             ("AWS/ApiGateway", "5XXError")}
    for name, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        assert (alarm["Properties"]["Namespace"], alarm["Properties"]["MetricName"]) in known, name


def test_each_dead_letter_queue_raises_an_alarm_on_its_first_message(template):
    dead = {name for name, q in resources(template, "AWS::SQS::Queue").items()
            if q["Properties"]["QueueName"].endswith("-dlq.fifo")}
    watched = set()
    for properties in alarms_on(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible"):
        assert properties["Threshold"] == 1 and properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        (dimension,) = properties["Dimensions"]
        watched.add(dimension["Value"]["Fn::GetAtt"][0])
    assert watched == dead


def test_each_region_alarms_when_its_agents_heartbeat_is_older_than_three_minutes_or_missing(template):
    """The sweep emits AgentHeartbeatAge per region every minute (chalicelib/telemetry.py); no figure is a breach."""
    from chalicelib import telemetry

    alarms = alarms_on(template, telemetry.NAMESPACE, "AgentHeartbeatAge")
    assert sorted(d["Value"] for a in alarms for d in a["Dimensions"]) == sorted(regions(template))
    for alarm in alarms:
        assert [d["Name"] for d in alarm["Dimensions"]] == ["region"]
        assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"]) == ("Maximum", 60, 180)
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["TreatMissingData"] == "breaching"


def test_the_apis_5xx_rate_raises_an_alarm(template):
    (alarm,) = alarms_on(template, "AWS/ApiGateway", "5XXError")
    (api,) = resources(template, "AWS::Serverless::Api").values()
    dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    assert dimensions == {"ApiName": api["Properties"]["DefinitionBody"]["info"]["title"],
                          "Stage": api["Properties"]["StageName"]}
    assert alarm["Statistic"] == "Average" and 0 < alarm["Threshold"] < 1  # the share of answers that were 5xx


def test_only_the_api_knows_the_scrape_token(template):
    for function in resources(template, "AWS::Serverless::Function").values():
        variables = function["Properties"]["Environment"]["Variables"]
        if function["Properties"]["Handler"] == "app.app":
            assert variables["METRICS_TOKEN"].startswith("{{resolve:secretsmanager:")
        else:
            assert "METRICS_TOKEN" not in variables


def test_an_idempotency_claim_in_progress_expires_with_the_function_timeout(template):
    """A Lambda killed at its timeout never releases an Idempotency-Key: the API must know that timeout."""
    for function in resources(template, "AWS::Serverless::Function").values():
        properties = function["Properties"]
        timeout = properties.get("Timeout", template.get("Globals", {}).get("Function", {}).get("Timeout"))
        assert timeout is not None
        assert properties["Environment"]["Variables"]["FUNCTION_TIMEOUT_SECONDS"] == str(timeout)


# --- the dashboard: a private bucket behind CloudFront ---------------------------------------------------------------


def test_the_dashboard_bucket_is_private_and_only_its_distribution_reads_it(template):
    (bucket_name, bucket), = resources(template, "AWS::S3::Bucket").items()
    access = bucket["Properties"]["PublicAccessBlockConfiguration"]
    assert access == {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
                      "RestrictPublicBuckets": True}
    assert bucket["Properties"]["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (policy,) = resources(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": bucket_name}
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    (distribution_name,) = resources(template, "AWS::CloudFront::Distribution")
    assert allows == [{
        "Sid": "CloudFrontReadsThroughOriginAccessControl", "Effect": "Allow",
        "Principal": {"Service": "cloudfront.amazonaws.com"}, "Action": "s3:GetObject",
        "Resource": {"Fn::Sub": f"${{{bucket_name}.Arn}}/*"},
        "Condition": {"StringEquals": {"AWS:SourceArn": {"Fn::Sub": "arn:${AWS::Partition}:cloudfront::"
                                                                    f"${{AWS::AccountId}}:distribution/${{{distribution_name}}}"}}},
    }]
    (control_name, control), = resources(template, "AWS::CloudFront::OriginAccessControl").items()
    assert control["Properties"]["OriginAccessControlConfig"] | {"Name": None} == {
        "Name": None, "OriginAccessControlOriginType": "s3", "SigningBehavior": "always", "SigningProtocol": "sigv4"}
    (origin,) = resources(template, "AWS::CloudFront::Distribution")[distribution_name]["Properties"][
        "DistributionConfig"]["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": [bucket_name, "RegionalDomainName"]}
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": [control_name, "Id"]}


def test_the_dashboard_is_https_only_under_the_prod_origin_with_its_own_security_headers(template, build):
    (distribution,) = resources(template, "AWS::CloudFront::Distribution").values()
    config = distribution["Properties"]["DistributionConfig"]
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert config["Aliases"] == [{"Ref": "DashboardDomain"}]
    prod_origins = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["prod"][
        "environment_variables"]["ALLOWED_ORIGINS"].split(",")
    assert f"https://{template['Parameters']['DashboardDomain']['Default']}" == prod_origins[0]
    (policy_name, policy), = resources(template, "AWS::CloudFront::ResponseHeadersPolicy").items()
    assert behaviour["ResponseHeadersPolicyId"] == {"Ref": policy_name}
    # What the dashboard's preview server sends (vite.config.ts), for the API the bundle calls: what e2e ran under.
    served = json.loads((build / "dashboard-security-headers.json").read_text())
    security = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    custom = policy["Properties"]["ResponseHeadersPolicyConfig"].get("CustomHeadersConfig", {"Items": []})["Items"]
    csp = security["ContentSecurityPolicy"]["ContentSecurityPolicy"]
    assert csp == next(v for k, v in served.items() if k.lower() == "content-security-policy")
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    assert directives["script-src"] == ["'self'"], csp
    assert DASHBOARD_API_URL in directives["connect-src"], csp
    assert directives["frame-ancestors"] == ["'none'"], csp
    assert all(entry["Override"] for entry in [*security.values(), *custom])
    assert security["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    spelled = {"content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy",
               "strict-transport-security"}
    assert {e["Header"].lower() for e in custom} == {k.lower() for k in served} - spelled


def test_the_dashboards_single_page_routes_answer_its_index(template):
    (distribution,) = resources(template, "AWS::CloudFront::Distribution").values()
    config = distribution["Properties"]["DistributionConfig"]
    assert config["DefaultRootObject"] == "index.html"
    assert {(e["ErrorCode"], e["ResponseCode"], e["ResponsePagePath"]) for e in config["CustomErrorResponses"]} == {
        (403, 200, "/index.html"), (404, 200, "/index.html")}


def test_the_dashboard_bundle_calls_the_prod_api_and_has_no_inline_script(build: Path) -> None:
    site = build / "dashboard"
    index = (site / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", index, flags=re.S)
    assert scripts and all("src=" in attributes and not body.strip() for attributes, body in scripts), scripts
    bundle = "".join(p.read_text(errors="replace") for p in site.rglob("*.js"))
    assert DASHBOARD_API_URL in bundle
    assert "http://localhost:8000" not in bundle  # the development default


def test_the_api_answers_on_the_host_the_dashboard_calls_on_the_dashboards_site(template):
    """The refresh cookie is SameSite=Strict: the dashboard's domain and the API's must be one site."""
    (api,) = resources(template, "AWS::Serverless::Api").values()
    domain = api["Properties"]["Domain"]
    assert domain["DomainName"] == {"Ref": "ApiDomain"} and domain["BasePath"] == ["/"]
    assert domain["CertificateArn"] == {"Ref": "ApiCertificateArn"} and domain["SecurityPolicy"] == "TLS_1_2"
    assert domain["EndpointConfiguration"] == api["Properties"]["EndpointConfiguration"] == "EDGE"  # a us-east-1 cert
    parameters = template["Parameters"]
    assert f"https://{parameters['ApiDomain']['Default']}" == DASHBOARD_API_URL
    assert re.fullmatch(parameters["ApiCertificateArn"]["AllowedPattern"],
                        "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d")
    assert not re.fullmatch(parameters["DashboardCertificateArn"]["AllowedPattern"],
                            "arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d")
    assert parameters["ApiDomain"]["Default"].endswith(".orochi.example")
    assert parameters["DashboardDomain"]["Default"].endswith(".orochi.example")


def test_packaging_refuses_an_api_on_another_site_than_the_dashboard(tmp_path: Path) -> None:
    template = tmp_path / "sam.json"
    template.write_text(json.dumps({"Resources": {"RestAPI": {"Type": "AWS::Serverless::Api",
                                                              "Properties": {"EndpointConfiguration": "EDGE"}}}}))
    headers = tmp_path / "headers.json"
    headers.write_text(json.dumps({"Content-Security-Policy": "script-src 'self'"}))
    command = [sys.executable, "-m", "infra.dashboard_site", str(template), str(headers), "--api-url",
               "https://abc123.execute-api.us-east-1.amazonaws.com"]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "must be on the dashboard's site (app.orochi.example)" in refused.stderr
    assert "Domain" not in json.loads(template.read_text())["Resources"]["RestAPI"]["Properties"]
