"""Login latency: percentiles of POST /v1/auth/login in-process against moto, next to the Argon2id
hash and verify times alone, so the reader sees how much of a login is the KDF.

Each login's time in DynamoDB calls is measured on the shared botocore client, so the table splits
a login into KDF, DynamoDB (moto here, so slower than DynamoDB from Lambda) and the rest.

    .venv/bin/python -m bench.login_latency [--logins 200]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.counting import DynamoCalls
from bench.inprocess import Api, app_in_process, new_email, register
from bench.report import heading, markdown_table, median, ms, percentile
from devstack.harness import PASSWORD

# The production policy (settings' defaults: PASSWORD_HASH_MEMORY_KIB, _ITERATIONS, _LANES).
MEMORY_KIB, ITERATIONS, LANES = 19456, 2, 1


@dataclass
class Series:
    label: str
    seconds: list[float]
    dynamo_seconds: list[float]
    cpu_seconds: list[float]
    calls: int = 0

    def row(self) -> list[str]:
        s = self.seconds
        dynamo = f"{ms(median(self.dynamo_seconds))}" if self.dynamo_seconds else "—"
        return [self.label, str(len(s)), ms(percentile(s, 50)), ms(percentile(s, 95)), ms(percentile(s, 99)),
                ms(min(s)), ms(max(s)), dynamo, ms(median(self.cpu_seconds))]


def timed(label: str, n: int, action: Callable[[], None], counter: DynamoCalls | None = None) -> Series:
    series = Series(label, [], [], [])
    for _ in range(n):
        if counter is not None:
            counter.reset()
        started, cpu = time.perf_counter(), time.process_time()
        action()
        series.seconds.append(time.perf_counter() - started)
        series.cpu_seconds.append(time.process_time() - cpu)
        if counter is not None:
            series.dynamo_seconds.append(counter.seconds)
            series.calls = len(counter.calls)
    return series


def expect(api: Api, status: int, method: str, path: str, **kwargs: object) -> Callable[[], None]:
    def call() -> None:
        reply = api.call(method, path, **kwargs)  # type: ignore[arg-type]
        if reply.status != status:
            raise RuntimeError(f"{method} {path} answered {reply.status}, expected {status}: {reply.body}")

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--kdf", type=int, default=50, help="hash and verify repetitions")
    parser.add_argument("--failures", type=int, default=50, help="wrong-password and unknown-e-mail logins")
    args = parser.parse_args()
    # A high failure limit so the repeated wrong-password logins are not locked out.
    with app_in_process(LOGIN_MAX_FAILURES="1000000") as (api, counter):
        from chalicelib.crypto import PasswordPolicy

        policy = PasswordPolicy(memory_kib=MEMORY_KIB, iterations=ITERATIONS, lanes=LANES)
        encoded = policy.hash(PASSWORD)
        account = register(api)
        good = {"email": account.email, "password": PASSWORD}
        wrong = {"email": account.email, "password": "not the password"}
        unknown = {"email": new_email("nobody"), "password": PASSWORD}
        login = expect(api, 200, "POST", "/v1/auth/login", body=good)
        for _ in range(5):  # warm-up: botocore client, pydantic, connection pool
            login()

        kdf_hash = timed("Argon2id hash alone", args.kdf, lambda: policy.hash(PASSWORD))
        kdf_verify = timed("Argon2id verify alone", args.kdf, lambda: policy.verify(PASSWORD, encoded))
        logins = timed("POST /v1/auth/login (success)", args.logins, login, counter)
        wrong_series = timed("POST /v1/auth/login (wrong password)", args.failures,
                             expect(api, 401, "POST", "/v1/auth/login", body=wrong), counter)
        unknown_series = timed("POST /v1/auth/login (unknown e-mail)", args.failures,
                               expect(api, 401, "POST", "/v1/auth/login", body=unknown), counter)
        me = timed("GET /v1/auth/me (reference: no KDF)", args.logins,
                   expect(api, 200, "GET", "/v1/auth/me", token=account.access_token), counter)

    heading(f"Login latency (in-process, moto; Argon2id m={MEMORY_KIB} KiB, t={ITERATIONS}, p={LANES}; ms)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    rows = [s.row() for s in (kdf_hash, kdf_verify, logins, wrong_series, unknown_series, me)]
    print(markdown_table(["what", "n", "p50", "p95", "p99", "min", "max", "DynamoDB p50", "app CPU p50"], rows))
    print("\nDynamoDB: wall time inside the botocore calls (moto on loopback). App CPU: CPU time of this process "
          "(app, botocore, Argon2id; moto runs in another process), less sensitive to other load on the machine.")

    p50, verify50 = percentile(logins.seconds, 50), percentile(kdf_verify.seconds, 50)
    dynamo50 = median(logins.dynamo_seconds)
    rest = p50 - verify50 - dynamo50
    print(f"\nA successful login at p50 ({ms(p50)} ms, {logins.calls} DynamoDB calls): Argon2id verify "
          f"{ms(verify50)} ms ({verify50 / p50:.0%}), DynamoDB calls {ms(dynamo50)} ms ({dynamo50 / p50:.0%}), "
          f"everything else (routing, pydantic, JWT, transaction building) {ms(rest)} ms ({rest / p50:.0%}).")
    cpu_login, cpu_verify = median(logins.cpu_seconds), median(kdf_verify.cpu_seconds)
    print(f"In CPU time: a login costs {ms(cpu_login)} ms of this process's CPU, Argon2id verify {ms(cpu_verify)} ms "
          f"of it ({cpu_verify / cpu_login:.0%}).")
    gap = percentile(unknown_series.seconds, 50) - percentile(wrong_series.seconds, 50)
    print(f"Unknown e-mail vs wrong password at p50: {gap * 1000:+.1f} ms "
          f"({unknown_series.calls} vs {wrong_series.calls} DynamoDB calls in the last sample); "
          "both spend one Argon2id computation, so the remaining gap is the e-mail-dependent DynamoDB work.")


if __name__ == "__main__":
    main()
