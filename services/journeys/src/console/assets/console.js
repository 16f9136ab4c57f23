// The Journeys console's only script: live counts on a journey's graph, and validation as you
// type in the definition editor. Pages work without it (counts then show as of the page load).
"use strict";

function refreshCounts(url) {
  fetch(url, { credentials: "same-origin", cache: "no-store" })
    .then(function (response) { return response.ok ? response.json() : null; })
    .then(function (values) {
      if (!values) { return; }
      Object.keys(values).forEach(function (id) {
        [id, "t-" + id].forEach(function (target) {
          var element = document.getElementById(target);
          if (element && element.textContent !== values[id]) { element.textContent = values[id]; }
        });
      });
    })
    .catch(function () { /* the next round tries again */ });
}

function validateAsYouType(form) {
  var textarea = form.querySelector("textarea[name=definition]");
  var status = document.getElementById("validation");
  var csrf = form.querySelector("input[name=csrf]").value;
  var timer = null;
  var round = 0;
  function run() {
    var mine = ++round;
    fetch(form.dataset.validate, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "text/plain", "x-csrf-token": csrf },
      body: textarea.value
    })
      .then(function (response) { return response.json(); })
      .then(function (result) {
        if (mine !== round) { return; }
        status.textContent = "";
        if (result.error) {
          status.className = "invalid";
          status.textContent = result.error;
        } else if (result.valid) {
          status.className = "valid";
          status.textContent = "Valid.";
        } else {
          status.className = "invalid";
          var list = document.createElement("ul");
          result.problems.forEach(function (problem) {
            var item = document.createElement("li");
            item.textContent = (problem.path ? problem.path + ": " : "") + problem.message;
            list.appendChild(item);
          });
          status.appendChild(document.createTextNode(result.problems.length + " problem(s):"));
          status.appendChild(list);
        }
      })
      .catch(function () { status.textContent = "Could not validate (is the node running?)"; });
  }
  textarea.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(run, 300);
  });
  run();
}

document.addEventListener("DOMContentLoaded", function () {
  var live = document.getElementById("live");
  if (live && live.dataset.stats) {
    refreshCounts(live.dataset.stats);
    setInterval(function () { refreshCounts(live.dataset.stats); }, 3000);
  }
  var editor = document.querySelector("form.editor[data-validate]");
  if (editor) { validateAsYouType(editor); }
});
