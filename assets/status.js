// Shows whether the server and its database answer, and the scope catalog.
async function probe(url) {
  try {
    const res = await fetch(url, { headers: { Accept: "application/json" } });
    return { ok: res.ok, body: await res.json() };
  } catch (err) {
    return { ok: false, body: null };
  }
}

async function main() {
  const health = await probe("/healthz");
  document.getElementById("health").textContent = health.ok ? "up" : "not answering";
  const ready = await probe("/readyz");
  document.getElementById("ready").textContent = ready.ok
    ? "ready"
    : (ready.body && ready.body.error ? ready.body.error.message : "not ready");
  const catalog = await probe("/api/v1/catalog");
  document.getElementById("scopes").textContent = catalog.ok
    ? catalog.body.scopes.map((s) => s.name).join(", ")
    : "unavailable";
}

main();
