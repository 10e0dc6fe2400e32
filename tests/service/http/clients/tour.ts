// The README's curl tour, through openapi-fetch typed by openapi-typescript from
// /openapi.json. test_generated_clients.py generates api.d.ts beside a copy of this file,
// compiles it with `tsc --strict` and runs it with node against a live server:
//   node out/tour.js http://127.0.0.1:PORT
// No casts and no `any`: every body is the type the schema gives, every error a Problem.
import createClient from "openapi-fetch";
import type { components, paths } from "./api.js";

type Problem = components["schemas"]["Problem"];

function must<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what}: no body`);
  return value;
}

function check(condition: boolean, what: string): void {
  if (!condition) throw new Error(`failed: ${what}`);
}

function problem(error: Problem | undefined, status: number, what: string): Problem {
  const p = must(error, what);
  check(p.status === status, `${what}: status ${p.status}, expected ${status}`);
  // Keys the server omits are optional in the type: `undefined`, never null.
  check(p.detail === undefined || typeof p.detail === "string", `${what}: detail`);
  return p;
}

async function tour(baseUrl: string): Promise<string[]> {
  const done: string[] = [];
  const api = createClient<paths>({ baseUrl });
  const email = "ada.ts@example.com";
  const password = "correct horse battery";

  const created = await api.POST("/register", {
    body: { email, password, display_name: "Ada" },
  });
  check(must(created.data, "register").display_name === "Ada", "register");
  const taken = await api.POST("/register", {
    body: { email, password, display_name: "Ada" },
  });
  problem(taken.error, 409, "register again");
  const weak = await api.POST("/register", {
    body: { email: "bob.ts@example.com", password: "abababab", display_name: "Bob" },
  });
  const invalid = problem(weak.error, 422, "weak password");
  check(invalid.errors !== undefined && invalid.errors[0]?.loc[1] === "password", "errors");
  done.push("register");

  const logged = await api.POST("/login", { body: { email, password } });
  const token = must(logged.data, "login").access_token;
  let last: Problem | undefined;
  let retryAfter: string | null = null;
  for (let i = 0; i < 6; i++) {
    const wrong = await api.POST("/login", {
      body: { email: "nobody.ts@example.com", password: "nope" },
    });
    last = wrong.error;
    retryAfter = wrong.response.headers.get("Retry-After");
  }
  problem(last, 429, "throttled login");
  check(Number(retryAfter) >= 1, "Retry-After");
  done.push("login");

  const me = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
  const profile = await me.GET("/users/me");
  check(must(profile.data, "me").email === email, "me");
  const profileTag = must(profile.response.headers.get("ETag") ?? undefined, "ETag");
  const fresh = await me.GET("/users/me", { params: { header: { "If-None-Match": profileTag } } });
  check(fresh.response.status === 304, "304");
  done.push("me");

  const placed = await me.POST("/users/me/orders", {
    body: {
      items: [
        { sku: "TEA-01", quantity: 2, unit_price_cents: 450 },
        { sku: "CUP-L", quantity: 1, unit_price_cents: 1299 },
      ],
    },
  });
  check(must(placed.data, "order").total_cents === 2199, "total");
  const page = await me.GET("/users/me/orders", { params: { query: { limit: 20 } } });
  check(must(page.data, "orders").next_cursor === null, "one page");
  done.push("orders");

  const current = await me.GET("/users/me/preferences");
  const tag = must(current.response.headers.get("ETag") ?? undefined, "preferences ETag");
  // The documented partial PUT: keys left out take their defaults.
  const unconditional = await me.PUT("/users/me/preferences", { body: { theme: "dark" } });
  problem(unconditional.error, 428, "PUT without If-Match");
  const replaced = await me.PUT("/users/me/preferences", {
    params: { header: { "If-Match": tag } },
    body: { language: "en", timezone: "Europe/Paris", theme: "dark", marketing_emails: false },
  });
  check(must(replaced.data, "preferences").page_size === 20, "defaults");
  const stale = await me.PUT("/users/me/preferences", {
    params: { header: { "If-Match": tag } },
    body: { theme: "light" },
  });
  problem(stale.error, 412, "stale If-Match");
  done.push("preferences");

  const overview = await me.GET("/users/me/overview");
  check(must(overview.data, "overview").preferences.theme === "dark", "overview");
  done.push("overview");

  const renamed = await me.PATCH("/users/me", {
    params: { header: { "If-Match": profileTag } },
    body: { display_name: "Ada L." },
  });
  check(must(renamed.data, "rename").display_name === "Ada L.", "rename");
  const out = await me.POST("/logout");
  check(out.response.status === 204, "logout");
  const gone = await me.GET("/users/me");
  problem(gone.error, 401, "after logout");
  check(gone.response.headers.get("WWW-Authenticate") === "Bearer", "WWW-Authenticate");
  done.push("logout");
  return done;
}

const baseUrl = process.argv[2];
if (baseUrl === undefined) throw new Error("usage: node out/tour.js BASE_URL");
console.log(JSON.stringify(await tour(baseUrl)));
