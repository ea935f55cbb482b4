/* Conduit sync health: draws the sync page's charts (vendored uPlot) and runs the replay button.
   Data comes from the page itself (<script type="application/json" id="boot">); the replay goes
   through Airflow's REST API with the user's own session cookie, so Airflow checks the permission. */
(function () {
  "use strict";

  var root = document.documentElement;
  try {
    var theme = window.localStorage.getItem("theme");  // the Airflow UI's choice (same origin)
    if (theme === "dark" || (!theme && window.matchMedia("(prefers-color-scheme: dark)").matches)) {
      root.classList.add("dark");
    }
  } catch (e) { /* no storage: light */ }

  // Links to Airflow pages move the Airflow UI around this frame rather than loading it inside.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[data-airflow-link]") : null;
    if (!link || window.parent === window || event.ctrlKey || event.metaKey) { return; }
    try {
      var host = window.parent;
      var url = new URL(link.href, window.location.href);
      if (url.origin !== host.location.origin) { return; }
      var idx = (host.history.state && typeof host.history.state.idx === "number") ? host.history.state.idx + 1 : 0;
      host.history.pushState({ usr: null, key: "conduit" + Date.now(), idx: idx }, "", url.pathname + url.search);
      host.dispatchEvent(new PopStateEvent("popstate", { state: host.history.state }));
      event.preventDefault();
    } catch (e) { /* not reachable: the link opens here */ }
  });

  var bootEl = document.getElementById("boot");
  if (!bootEl) { return; }
  var boot = JSON.parse(bootEl.textContent);

  var PALETTE = ["#2f9e44", "#1c7ed6", "#e03131", "#f08c00", "#7048e8", "#0c8599", "#d6336c", "#5c940d",
                 "#862e9c", "#495057", "#e8590c", "#364fc7"];

  function seriesOf(label, color) {
    return { label: label, stroke: color, width: 2, spanGaps: true,
             points: { show: true, size: 8, fill: color, stroke: color } };
  }

  function chart(el, x, series, opts) {
    el.textContent = "";
    el.dataset.points = String(x.length);
    el.dataset.series = String(series.length);
    if (!x.length || typeof window.uPlot !== "function") {
      var empty = document.createElement("div");
      empty.className = "empty";
      empty.textContent = x.length ? "charts need uPlot" : "no finished runs yet";
      el.appendChild(empty);
      el.dataset.ready = "true";
      return null;
    }
    var data = [x].concat(series.map(function (s) { return s.values; }));
    var dark = root.classList.contains("dark");
    var axis = { stroke: dark ? "#c9d1db" : "#495057", grid: { stroke: dark ? "#323841" : "#edf0f3" },
                 ticks: { stroke: dark ? "#323841" : "#dee2e6" } };
    var plot = new window.uPlot({
      width: Math.max(el.clientWidth, 320), height: 220,
      scales: { x: { time: true, range: function (u, min, max) { return min === max ? [min - 3600, max + 3600] : [min, max]; } },
                y: opts.yRange ? { range: opts.yRange } : {} },
      axes: [axis, Object.assign({ size: 56, label: opts.yLabel || "" }, axis)],
      series: [{ label: "run start" }].concat(series.map(function (s, i) { return seriesOf(s.label, PALETTE[i % PALETTE.length]); })),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true }
    }, data, el);
    el.dataset.ready = "true";
    return plot;
  }

  function draw() {
    var rows = boot.charts.rows;
    var rate = boot.charts.pass_rate;
    var all = Object.keys(rate).filter(function (k) { return k !== "x" && k !== "run_id"; });
    // the expectations that failed rows at least once; the others are one flat line at 100 %
    var names = all.filter(function (k) { return rate[k].some(function (v) { return v !== null && v < 1; }); });
    var note = document.getElementById("pass-rate-note");
    if (note) {
      var others = all.length - names.length;
      note.textContent = !all.length ? "" : names.length ? (others ? others + " more passed on every row of every run" : "")
        : "all " + all.length + " expectations passed on every row of every run";
    }
    if (!names.length) { names = all.length ? [all[0]] : []; }
    chart(document.getElementById("rows-chart"), rows.x, [
      { label: "inserted", values: rows.inserted }, { label: "updated", values: rows.updated },
      { label: "deleted", values: rows.deleted }], { yLabel: "rows" });
    chart(document.getElementById("duration-chart"), rows.x, [{ label: "duration (s)", values: rows.duration_s }],
          { yLabel: "seconds" });
    chart(document.getElementById("pass-rate-chart"), rate.x, names.map(function (n) {
      return { label: n, values: rate[n].map(function (v) { return v === null ? null : Math.round(v * 10000) / 100; }) };
    }), { yLabel: "% passed", yRange: [0, 100] });
  }

  function setUpReplay() {
    var button = document.getElementById("replay");
    var status = document.getElementById("replay-status");
    if (!button || !status) { return; }
    var runs = boot.bases.airflow + "api/v2/dags/" + encodeURIComponent(boot.replay.dag_id) + "/dagRuns";

    function poll(runId) {
      fetch(runs + "/" + encodeURIComponent(runId), { credentials: "same-origin" })
        .then(function (r) {
          if (r.ok) { return r.json(); }
          var err = new Error("HTTP " + r.status);
          err.final = r.status >= 400 && r.status < 500;  // no access or no such run: asking again will not help
          return Promise.reject(err);
        })
        .then(function (run) {
          status.dataset.state = run.state;
          status.textContent = "replay " + runId + ": " + run.state;
          if (run.state === "success") {
            status.textContent += "; reloading";
            window.location.reload();
          } else if (run.state === "failed") {
            status.textContent += " (see its task log in Airflow)";
            button.disabled = false;
          } else {
            window.setTimeout(function () { poll(runId); }, 2000);
          }
        })
        .catch(function (err) {  // a busy or restarting API server: the run goes on, so keep following it
          status.textContent = "could not follow the replay " + runId + ": " + err.message;
          if (!err.final) {
            status.textContent += "; asking again";
            window.setTimeout(function () { poll(runId); }, 5000);
          }
        });
    }

    button.addEventListener("click", function () {
      button.disabled = true;
      status.textContent = "starting a replay of " + boot.name + "…";
      fetch(runs, {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ logical_date: null, conf: boot.replay.conf,
                               note: "Replay of " + boot.name + " from Conduit's sync health page" })
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) { return { ok: r.ok, status: r.status, body: body }; });
      }).then(function (res) {
        if (!res.ok) {
          status.textContent = "Airflow refused the replay (" + res.status + "): " + (res.body.detail || "");
          button.disabled = false;
          return;
        }
        status.dataset.runId = res.body.dag_run_id;
        status.textContent = "replay " + res.body.dag_run_id + ": " + res.body.state;
        poll(res.body.dag_run_id);
      }).catch(function (err) {
        status.textContent = "the replay could not be started: " + err.message;
        button.disabled = false;
      });
    });
    button.disabled = button.dataset.canReplay !== "true";
  }

  draw();
  setUpReplay();
  var resizing = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizing);
    resizing = window.setTimeout(draw, 200);
  });
})();
