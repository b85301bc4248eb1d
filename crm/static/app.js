/* 公海 CRM: the little JavaScript the pages need. htmx does the rest. */
(function () {
  "use strict";

  // One toast at a time (a new one replaces the last); it never catches taps, except its 撤销 button.
  // ``undo``: {url, label} — a button that POSTs there (htmx, with the CSRF header) within the toast's life.
  function toast(message, level, undo) {
    var box = document.getElementById("toasts");
    if (!box || !message) return;
    box.innerHTML = "";
    var el = document.createElement("div");
    el.className = "toast toast-" + (level || "info");
    el.setAttribute("role", level === "error" ? "alert" : "status");
    var text = document.createElement("span");
    text.textContent = message;
    el.appendChild(text);
    if (undo && undo.url) {
      var btn = document.createElement("button");
      btn.type = "button";
      btn.className = "toast-undo";
      btn.textContent = undo.label || "撤销";
      btn.addEventListener("click", function () {
        el.remove();
        if (window.htmx) window.htmx.ajax("POST", undo.url, { swap: "none", source: document.body });
      });
      el.appendChild(btn);
    }
    box.appendChild(el);
    var life = undo ? 6000 : 3000;
    setTimeout(function () { el.classList.add("leaving"); }, life);
    setTimeout(function () { el.remove(); }, life + 500);
  }
  window.crmToast = toast;

  document.addEventListener("crm:toast", function (evt) {
    var d = evt.detail || {};
    toast(d.message || d.value, d.level, d.undo);
  });

  // A failed htmx request shows a small error toast instead of nothing.
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var msg = "";
    try {
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var node = doc.querySelector("[data-error-message]");
      msg = node ? node.getAttribute("data-error-message") : "";
    } catch (e) { /* not HTML */ }
    toast(msg || (document.body.dataset.errorText || "操作失败") + " (" + xhr.status + ")", "error");
  });
  document.addEventListener("htmx:sendError", function () {
    toast(document.body.dataset.offlineText || "网络连接失败,请检查网络后重试。", "error");
  });

  // Quick picks for datetime inputs: <button data-pick="1d|3d|mon" data-target="#id">
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function localValue(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  document.addEventListener("click", function (evt) {
    var pick = evt.target.closest("[data-pick]");
    if (pick) {
      evt.preventDefault();
      var input = document.querySelector(pick.dataset.target);
      if (!input) return;
      var d = new Date();
      var hour = parseInt(pick.dataset.hour || "10", 10);
      var kind = pick.dataset.pick;
      if (kind === "mon") { d.setDate(d.getDate() + ((8 - d.getDay()) % 7 || 7)); }
      else { d.setDate(d.getDate() + parseInt(kind, 10)); }
      d.setHours(hour, 0, 0, 0);
      input.value = localValue(d);
      input.dispatchEvent(new Event("change", { bubbles: true }));
      return;
    }
    var copy = evt.target.closest("[data-copy]");
    if (copy) {
      evt.preventDefault();
      var text = copy.dataset.copy;
      var done = function () { toast(copy.dataset.copied || "已复制", "success"); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
      } else { fallbackCopy(text); done(); }
      return;
    }
    var checkAll = evt.target.closest("[data-check-all]");
    if (checkAll) {
      var boxes = document.querySelectorAll(checkAll.dataset.checkAll);
      boxes.forEach(function (b) { b.checked = checkAll.checked; });
    }
  });
  function fallbackCopy(text) {
    var ta = document.createElement("textarea");
    ta.value = text; ta.setAttribute("readonly", ""); ta.style.position = "fixed"; ta.style.opacity = "0";
    document.body.appendChild(ta); ta.select();
    try { document.execCommand("copy"); } catch (e) { /* ignore */ }
    ta.remove();
  }

  // Close <details class="menu"> when clicking elsewhere.
  document.addEventListener("click", function (evt) {
    document.querySelectorAll("details.menu[open]").forEach(function (d) {
      if (!d.contains(evt.target)) d.removeAttribute("open");
    });
  });
})();

/* Follow-up sheet over the inbox (crm/followups): close on its ✕ button or Escape. */
(function () {
  "use strict";
  function closeSheet() {
    var sheet = document.getElementById("sheet");
    if (sheet) sheet.innerHTML = "";
  }
  document.addEventListener("click", function (evt) {
    if (evt.target.closest("[data-close-sheet]")) { evt.preventDefault(); closeSheet(); return; }
    if (evt.target.id === "sheet") closeSheet();  // a tap on the dimmed backdrop
  });
  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape") closeSheet();
  });
})();

/* Pipeline kanban (crm/pipeline): drag a card to another column (desktop) or pick a stage (phone). A stage
   with no requirement moves at once (POST with the CSRF header); one with a requirement (quote, follow-up,
   contract, lost reason) opens its form in the sheet instead. The board refreshes on crm:pipeline-changed. */
(function () {
  "use strict";
  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }
  function openForm(board, card, stageId) {
    var url = board.dataset.formUrl + "?context=board&opportunity_id=" + encodeURIComponent(card.dataset.oppId) +
      "&stage=" + encodeURIComponent(stageId);
    if (window.htmx) { window.htmx.ajax("GET", url, { target: "#sheet", swap: "innerHTML" }); }
    else { window.location.href = url.replace("context=board", "context=page"); }
  }
  function refresh() { document.body.dispatchEvent(new CustomEvent("crm:pipeline-changed", { bubbles: true })); }
  function move(card, stageId, requirement) {
    var board = card.closest(".kanban");
    if (!board || !card.dataset.moveUrl) return;
    if (requirement && requirement !== "none") { openForm(board, card, stageId); return; }
    var body = new URLSearchParams({ stage: stageId, context: "board" });
    card.classList.add("is-moving");
    fetch(card.dataset.moveUrl, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "HX-Request": "true", "X-Crm-Drop": "1", "Content-Type": "application/x-www-form-urlencoded" }
    }).then(function (resp) {
      if (resp.ok) {
        var t = resp.headers.get("HX-Trigger");
        try { var d = JSON.parse(t || "{}")["crm:toast"]; if (d && window.crmToast) window.crmToast(d.message, d.level); } catch (e) { /* none */ }
        refresh();
        return;
      }
      return resp.text().then(function (html) {
        card.classList.remove("is-moving");
        var sheet = document.getElementById("sheet");
        if (resp.status === 422 && sheet) {
          sheet.innerHTML = html;
          if (window.htmx) window.htmx.process(sheet);
        } else if (window.crmToast) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var node = doc.querySelector("[data-error-message]");
          window.crmToast((node && node.getAttribute("data-error-message")) || ((document.body.dataset.errorText || "操作失败") + " (" + resp.status + ")"), "error");
        }
        refresh();
      });
    }).catch(function () {
      card.classList.remove("is-moving");
      if (window.crmToast) window.crmToast(document.body.dataset.offlineText || "网络连接失败", "error");
    });
  }
  var dragged = null;
  document.addEventListener("dragstart", function (evt) {
    var card = evt.target.closest && evt.target.closest(".kanban-card[draggable=true]");
    if (!card) return;
    dragged = card;
    card.classList.add("is-dragging");
    evt.dataTransfer.effectAllowed = "move";
    evt.dataTransfer.setData("text/plain", card.dataset.oppId);
  });
  document.addEventListener("dragend", function () {
    if (dragged) dragged.classList.remove("is-dragging");
    document.querySelectorAll(".kanban-col.is-over").forEach(function (c) { c.classList.remove("is-over"); });
    dragged = null;
  });
  document.addEventListener("dragover", function (evt) {
    var col = evt.target.closest && evt.target.closest(".kanban-col");
    if (!col || !dragged) return;
    evt.preventDefault();
    evt.dataTransfer.dropEffect = "move";
    document.querySelectorAll(".kanban-col.is-over").forEach(function (c) { if (c !== col) c.classList.remove("is-over"); });
    col.classList.add("is-over");
  });
  document.addEventListener("drop", function (evt) {
    var col = evt.target.closest && evt.target.closest(".kanban-col");
    if (!col || !dragged) return;
    evt.preventDefault();
    col.classList.remove("is-over");
    var card = dragged;
    if (card.closest(".kanban-col") === col) return;
    move(card, col.dataset.stageId, col.dataset.requirement);
  });
  document.addEventListener("change", function (evt) {
    var pick = evt.target.closest && evt.target.closest("[data-stage-picker]");
    if (!pick) return;
    var card = pick.closest(".kanban-card");
    var opt = pick.options[pick.selectedIndex];
    move(card, pick.value, opt ? opt.dataset.requirement : "none");
  });
  // Quote items: "再加一行" clones the last row, emptied.
  document.addEventListener("click", function (evt) {
    var add = evt.target.closest && evt.target.closest("[data-add-row]");
    if (!add) return;
    evt.preventDefault();
    var box = add.closest("form").querySelector(add.dataset.addRow);
    var rows = box ? box.querySelectorAll(".quote-row:not(.quote-head)") : [];
    if (!rows.length) return;
    var copy = rows[rows.length - 1].cloneNode(true);
    copy.querySelectorAll("input").forEach(function (i) { i.value = i.name === "item_qty" ? "1" : ""; });
    rows[rows.length - 1].after(copy);
  });
})();

/* Behaviour that used to sit in inline handlers and htmx trigger filters, kept here so the pages pass a
   Content-Security-Policy without 'unsafe-inline' or 'unsafe-eval' (crm/web.py):
   - [data-poll="SECONDS"]: an element gets a "crm:poll" event every SECONDS while the tab is visible, and
     at once when the tab becomes visible again if it also has [data-poll-on-show];
   - [data-autosubmit] on a <select>: submits its form on change;
   - [data-clear-closest="SELECTOR"] on a button: empties the closest SELECTOR (the assign slot's 取消);
   - form[data-confirm]: asks before submitting. */
(function () {
  "use strict";
  function poll(onShow) {
    if (document.visibilityState !== "visible" || !window.htmx) return;
    var now = Date.now();
    document.querySelectorAll("[data-poll]").forEach(function (el) {
      var every = 1000 * (parseInt(el.dataset.poll, 10) || 60);
      var last = parseInt(el.dataset.polledAt || "0", 10);
      if (!last) { el.dataset.polledAt = String(now); if (!onShow) return; }
      if (onShow ? el.hasAttribute("data-poll-on-show") : now - last >= every) {
        el.dataset.polledAt = String(now);
        window.htmx.trigger(el, "crm:poll");
      }
    });
  }
  setInterval(function () { poll(false); }, 5000);
  document.addEventListener("visibilitychange", function () { poll(true); });
  document.addEventListener("change", function (evt) {
    var select = evt.target.closest && evt.target.closest("[data-autosubmit]");
    if (select && select.form) select.form.submit();
  });
  // [data-open-details="#id"]: opens that <details> and brings it into view (the action bar's 申请延期).
  document.addEventListener("click", function (evt) {
    var link = evt.target.closest && evt.target.closest("[data-open-details]");
    if (!link) return;
    var box = document.querySelector(link.dataset.openDetails);
    if (!box) return;
    evt.preventDefault();
    box.open = true;
    box.scrollIntoView({ block: "center", behavior: "smooth" });
    var first = box.querySelector("input, textarea, select");
    if (first) first.focus({ preventScroll: true });
  });
  // A form that comes back with errors (422) brings the first one into view: on a phone it is often
  // off-screen (a long settings page whose save button is pinned at the bottom).
  document.addEventListener("htmx:afterSwap", function (evt) {
    if (!evt.detail.xhr || evt.detail.xhr.status !== 422) return;
    var root = evt.detail.target && evt.detail.target.isConnected ? evt.detail.target : document;
    var first = root.querySelector(".has-error, .alert, .errors, [role=alert]");
    if (!first) return;
    var box = first.closest("details");
    if (box) box.open = true;
    first.scrollIntoView({ block: "center", behavior: "smooth" });
  });
  // Holiday calendar (recycle/holidays.html): a tap on a day cycles 放假 → 调休上班 → 普通 and rewrites its
  // line in the textarea the form posts ("YYYY-MM-DD,休|班,名称").
  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest && evt.target.closest("[data-hday]");
    if (!btn) return;
    var picker = btn.closest("[data-holiday-picker]");
    var area = picker && document.querySelector(picker.dataset.holidayPicker);
    if (!area) return;
    evt.preventDefault();
    var day = btn.dataset.hday;
    var lines = area.value.split("\n").filter(function (l) { return l.trim(); });
    var idx = -1;
    lines.forEach(function (l, i) { if (l.trim().indexOf(day) === 0) idx = i; });
    var name = (picker.querySelector("[data-holiday-name]") || {}).value || "";
    var weekend = [0, 6].indexOf(new Date(day + "T00:00:00").getDay()) >= 0;
    btn.classList.remove("off", "work", "weekend");
    if (idx < 0) {
      lines.push(day + ",休," + name);
      btn.classList.add("off");
    } else if (lines[idx].split(",")[1] === "休") {
      var parts = lines[idx].split(",");
      lines[idx] = day + ",班," + (parts.slice(2).join(",") || name);
      btn.classList.add("work");
    } else {
      lines.splice(idx, 1);
      if (weekend) btn.classList.add("weekend");
    }
    lines.sort();
    area.value = lines.join("\n");
  });
  // A field's error goes away as soon as the user corrects it (the server checks again on save).
  document.addEventListener("input", function (evt) {
    var box = evt.target.closest && evt.target.closest(".field.has-error");
    if (!box) return;
    box.classList.remove("has-error");
    box.querySelectorAll(".errors").forEach(function (ul) { ul.remove(); });
  });
  // Arriving at a customer page with #extension-action (the workbench's 申请延期) opens that form.
  document.addEventListener("DOMContentLoaded", function () {
    if (location.hash !== "#extension-action") return;
    var box = document.getElementById("extension-action");
    if (box) { box.open = true; box.scrollIntoView({ block: "center" }); }
  });
  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest && evt.target.closest("[data-clear-closest]");
    if (!btn) return;
    var box = btn.closest(btn.dataset.clearClosest);
    if (box) { evt.preventDefault(); box.innerHTML = ""; }
  });
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    if (form.matches && form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) {
      evt.preventDefault();
    }
  });
})();
