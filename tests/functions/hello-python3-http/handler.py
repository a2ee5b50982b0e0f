# An OpenFaaS python3-http handler as `faas-cli new --lang python3-http` would have it,
# ruff: noqa: ANN001, ANN201
# kept free of MXT imports: the runtime must serve it unchanged.
import json


def handle(event, context):
    name = event.query.get("name") or "world"
    if event.method == "POST" and event.body:
        try:
            name = json.loads(event.body).get("name", name)
        except ValueError:
            return {"statusCode": 400, "body": "body must be JSON"}
    return {
        "statusCode": 200,
        "body": {"greeting": "Hello, " + name + "!", "path": event.path},
        "headers": {"X-Served-By": "python3-http", "X-Hostname": context.hostname},
    }
