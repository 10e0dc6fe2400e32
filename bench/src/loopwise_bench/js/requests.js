// loopwise bench: the one k6 script behind every scenario (the twin of lua/requests.lua).
//
// LOOPWISE_K6_CONFIG=run.json k6 run requests.js; run.json holds
//   {"mode": "closed"|"paced", "url", "requests_file", "connections", "seconds",
//    "rate", "max_in_flight", "timeout_s", "summary_file"}
//
// REQUESTS_FILE holds one request per line, tab-separated:
//   weight <TAB> method <TAB> path <TAB> headers ("Name: value" joined by \x1f) <TAB> body
// Each virtual user (VU, one connection each) walks the same weighted, shuffled cycle from
// its own offset, so every server under comparison gets the same requests in the same
// proportions. A body containing "{seq}" gets a value unique to this run, VU and request.
//
// MODE "closed": `connections` VUs, each sending again as soon as it is answered.
// MODE "paced": the constant-arrival-rate executor (an open model): requests start on a
// fixed schedule whatever the server does. `max_in_flight` VUs are made before the start
// (making one mid-run takes k6 long enough to drop requests meanwhile: measured 6 of 600
// at 200/s with 4 made ahead and 200 allowed), so a slow answer does not hold back the
// next request: it goes out on time on another VU's connection. Latency is the iteration's
// duration, from the moment the scheduler started it (its due time) to the last byte.
// A request due while `max_in_flight` are outstanding is not sent late: k6 drops it and
// counts it in `dropped_iterations`, which the harness reports as a failure.
// handleSummary writes k6's end-of-test summary as JSON for the harness to read.

import http from "k6/http";
import exec from "k6/execution";

const config = JSON.parse(open(__ENV.LOOPWISE_K6_CONFIG));
const base = config.url.replace(/\/+$/, "");

// Statuses counted one by one (k6 keeps a per-status count only for a threshold's
// sub-metric); the harness files any other answer under "other".
const STATUSES = [
  0, 200, 201, 202, 204, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 409, 410,
  413, 415, 422, 429, 500, 502, 503, 504,
];

function loadRequests(text) {
  const weighted = [];
  for (const line of text.split("\n")) {
    if (line.length === 0) continue;
    const [weight, method, path, headerText, body] = line.split("\t");
    const headers = {};
    if (headerText) {
      for (const header of headerText.split("\x1f")) {
        const colon = header.indexOf(":");
        headers[header.slice(0, colon)] = header.slice(colon + 1).trimStart();
      }
    }
    const request = { method, url: base + path, headers, body: body || null };
    for (let i = 0; i < Number(weight); i++) weighted.push(request);
  }
  // Interleave deterministically (a small LCG) so a short run sees every kind of request.
  let seed = 7;
  for (let i = weighted.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    const j = seed % (i + 1);
    [weighted[i], weighted[j]] = [weighted[j], weighted[i]];
  }
  return weighted;
}

const sequence = loadRequests(open(config.requests_file));
const timeout = `${config.timeout_s}s`;

function scenario() {
  const duration = `${config.seconds}s`;
  if (config.mode === "paced") {
    return {
      executor: "constant-arrival-rate",
      // The rate per millisecond keeps fractional rates (k6 takes an integer `rate`).
      rate: Math.max(1, Math.round(config.rate * 1000)),
      timeUnit: "1000s",
      duration,
      preAllocatedVUs: config.max_in_flight,
      maxVUs: config.max_in_flight,
      gracefulStop: timeout, // every request sent is answered or times out, and counted
    };
  }
  return { executor: "constant-vus", vus: config.connections, duration, gracefulStop: "1s" };
}

export const options = {
  scenarios: { load: scenario() },
  discardResponseBodies: true,
  // Only the tags the harness reads: every sample carries its tags, and fewer cost less CPU.
  systemTags: (__ENV.LOOPWISE_K6_TAGS || "status").split(","),
  summaryTrendStats: ["avg", "min", "med", "max", "p(90)", "p(99)", "p(99.9)"],
  thresholds: Object.fromEntries(STATUSES.map((s) => [`http_reqs{status:${s}}`, ["count>=0"]])),
};

let position = -1;
let counter = 0;
let nonce = "";

export default function () {
  if (position < 0) {
    position = (exec.vu.idInTest * 7919) % sequence.length;
    nonce = `${Date.now()}-${exec.vu.idInTest}`;
  }
  position = (position + 1) % sequence.length;
  const r = sequence[position];
  let body = r.body;
  if (body !== null && body.includes("{seq}")) {
    counter += 1;
    body = body.replaceAll("{seq}", `${nonce}-${counter}`);
  }
  http.request(r.method, r.url, body, { headers: r.headers, timeout });
}

export function handleSummary(data) {
  return { [config.summary_file]: JSON.stringify(data) };
}
