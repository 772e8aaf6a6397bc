// hoconv serve page: upload an image / video or stream webcam frames, then draw the results.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const maxMb = Number(document.body.dataset.maxUploadMb);
  const UPLOAD_TABLE_LIMIT = 5000;
  const WEBCAM_TABLE_LIMIT = 300;
  const webcam = { stream: null, session: null, rows: [], busy: false, timer: null, start: 0, run: 0 };

  function setStatus(text, kind) {
    $("status").textContent = text;
    $("status").className = kind || "";
  }

  function setWarnings(lines) {
    $("warnings").replaceChildren(...(lines || []).map((line) => {
      const li = document.createElement("li");
      li.textContent = line;
      return li;
    }));
  }

  const fmt = (x, digits) => (x === null || x === undefined ? "" : Number(x).toFixed(digits));

  // The rows as a table (the last `limit`; the note says how many are not shown);
  // clicking a row calls onRow(row).
  function fillTable(rows, limit, onRow) {
    const body = $("rows").tBodies[0];
    const shown = rows.slice(-limit);
    $("table-note").textContent = shown.length < rows.length
      ? `the last ${shown.length} of ${rows.length} rows (all of them are in predictions.csv)` : `${rows.length} row(s)`;
    body.replaceChildren(...shown.map((r) => {
      const tr = document.createElement("tr");
      if (onRow) tr.addEventListener("click", () => onRow(r));
      const box = r.box_x === null || r.box_x === undefined ? "" : `${r.box_x}, ${r.box_y}, ${r.box_w}, ${r.box_h}`;
      const cells = [r.frame, fmt(r.time_s, 3), r.face === null ? "" : r.face, box, fmt(r.valence, 3),
                     fmt(r.arousal, 3), r.expression || "", fmt(r.expression_prob, 2), r.reason || ""];
      cells.forEach((value, i) => {
        const td = document.createElement("td");
        td.textContent = value === undefined ? "" : value;
        if (i === cells.length - 1) td.className = "note";
        tr.appendChild(td);
      });
      return tr;
    }));
  }

  function drawPlots(rows, timeLabel, fps) {
    const drawn = HoconvPlots.drawCurves($("curves"), rows, { timeLabel: timeLabel, gap: fps ? 1.5 / fps : Infinity });
    HoconvPlots.drawCircumplex($("circumplex"), rows);
    let caption = `Valence and arousal over ${timeLabel}, one colour per face track ` +
                  `(${drawn.tracks} track(s), ${drawn.points} scored row(s))`;
    if (drawn.outside) caption += `; ${drawn.outside} value(s) outside [-1, 1] drawn on the border`;
    $("curves-caption").textContent = caption;
  }

  function showFrame(image, frames) {
    $("frame").src = image.url;
    $("frame").hidden = false;

    $("frame-caption").textContent = `frame ${image.frame} of ${frames} (annotated)`;
    for (const t of $("thumbs").children) t.classList.toggle("current", t.dataset.url === image.url);
  }

  // A frame: the video seeks to it when it plays here, else its annotated still is shown.
  function seekOrShow(job, image) {
    const video = $("annotated-video");
    if (!video.hidden && job.fps) {
      video.pause();
      video.currentTime = (image.frame + 0.5) / job.fps;
    } else {
      showFrame(image, job.frames);
    }
  }

  // The annotated video when the browser plays it (the curves' cursor follows it), else frames.
  function showVideo(job) {
    const video = $("annotated-video");
    video.hidden = true;
    video.removeAttribute("src");
    HoconvPlots.setCursor($("curves"), null);
    if (!job.video) return;
    video.onloadeddata = () => {
      video.hidden = false;
      $("frame").hidden = true;
      $("frame-caption").textContent = "annotated video (the curves' dashed line is its time); thumbnails: frames";
    };
    video.onerror = () => { video.hidden = true; $("frame").hidden = false; };
    video.ontimeupdate = () => HoconvPlots.setCursor($("curves"), video.currentTime);
    video.src = job.video;
  }

  function showJob(job) {
    $("results").hidden = false;
    $("webcam-video").hidden = true;
    $("result-title").textContent = `${job.file}: ${job.kind}, ${job.frames} frame(s), ` +
      `${job.scored} face(s) scored, model ${job.model} (${job.mode}, trained on ${job.trained_on || "unknown data"})`;
    $("thumbs").replaceChildren(...job.images.map((image) => {
      const img = document.createElement("img");
      img.src = image.url;
      img.dataset.url = image.url;
      img.alt = `frame ${image.frame}`;
      img.title = `frame ${image.frame}`;
      img.addEventListener("click", () => seekOrShow(job, image));
      return img;
    }));
    if (job.images.length) showFrame(job.images[0], job.frames);
    showVideo(job);
    drawPlots(job.rows, "time (s)", job.fps);
    $("curves-figure").hidden = job.kind !== "video";  // a still has no time axis
    fillTable(job.rows, UPLOAD_TABLE_LIMIT, (r) => {
      const image = job.images.find((i) => i.frame === r.frame) || { frame: r.frame, url: null };
      if (image.url || !$("annotated-video").hidden) seekOrShow(job, image);
    });
    $("files").replaceChildren(document.createTextNode("Files: "), ...job.files.map((f) => {
      const a = document.createElement("a");
      a.href = f.url;
      a.textContent = f.name + " ";
      return a;
    }));
    setWarnings(job.warnings);
    if (job.message) setStatus(job.message, "error");
    else setStatus(`done: ${job.scored} face(s) scored in ${job.frames} frame(s) of ${job.file} (${job.elapsed_s} s)`);
  }

  async function postForm(url, data) {
    const response = await fetch(url, { method: "POST", body: data });
    let payload = null;
    try {
      payload = await response.json();
    } catch (err) {
      throw new Error(`the server answered ${response.status} ${response.statusText}`);
    }
    if (!response.ok) throw new Error(payload.error || `the server answered ${response.status}`);
    return payload;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Poll a queued job until it is done (its payload) or failed (throws its message).
  async function waitForJob(job, name) {
    for (;;) {
      await sleep(400);
      const response = await fetch(`api/jobs/${job}`);
      const state = await response.json();
      if (!response.ok || state.state === "error") throw new Error(state.error || `the server answered ${response.status}`);
      if (state.state === "done") return Object.assign(state.result, { elapsed_s: state.elapsed_s });
      const doing = state.state === "queued" ? "queued (another prediction runs):" : "predicting on";
      setStatus(`${doing} ${name} ... ${state.elapsed_s} s`, "busy");
    }
  }

  async function upload(event) {
    event.preventDefault();
    const file = $("file").files[0];
    if (!file) return setStatus("choose an image or a video first", "error");
    if (file.size > maxMb * 1024 * 1024) {
      return setStatus(`file too large: ${(file.size / 1048576).toFixed(1)} MB, the limit is ${maxMb} MB`, "error");
    }
    stopWebcam();
    const data = new FormData();
    data.append("file", file);
    data.append("checkpoint", $("checkpoint").value);
    $("submit").disabled = true;
    setWarnings([]);
    setStatus(`predicting on ${file.name} ...`, "busy");
    try {
      const queued = await postForm("api/predict", data);
      showJob(await waitForJob(queued.job, file.name));
    } catch (err) {
      $("results").hidden = true;
      setStatus(`${file.name}: ${err.message}`, "error");
    } finally {
      $("submit").disabled = false;
    }
  }

  function sendWebcamFrame() {
    const video = $("webcam-video");
    if (webcam.busy || !video.videoWidth) return;
    webcam.busy = true;
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const run = webcam.run;
    const current = () => webcam.stream && webcam.run === run;  // false once stopped / restarted
    canvas.toBlob(async (blob) => {
      const data = new FormData();
      data.append("frame", blob, "frame.jpg");
      data.append("checkpoint", $("checkpoint").value);
      data.append("time_s", ((performance.now() - webcam.start) / 1000).toFixed(3));
      if (webcam.session) data.append("session", webcam.session);
      try {
        const res = await postForm("api/webcam", data);
        if (!current()) return;  // stopped while this frame was scored: drop it
        webcam.session = res.session;
        webcam.rows.push(...res.rows);
        $("frame").src = res.image;
        $("frame").hidden = false;
        $("frame-caption").textContent = `webcam frame ${res.frame} at ${res.time_s} s (annotated)`;
        drawPlots(webcam.rows, "time (s)", 2);
        fillTable(webcam.rows, WEBCAM_TABLE_LIMIT);
        setStatus(res.message || `webcam: ${webcam.rows.length} row(s)`, res.message ? "error" : "");
      } catch (err) {
        if (!current()) return;
        setStatus(`webcam: ${err.message}`, "error");
        stopWebcam();
      } finally {
        if (webcam.run === run) webcam.busy = false;
      }
    }, "image/jpeg", 0.85);
  }

  async function startWebcam() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return setStatus("webcam: this browser gives no camera access here (open the page on 127.0.0.1 or localhost)", "error");
    }
    try {
      webcam.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
    } catch (err) {
      return setStatus(`webcam: no camera (${err.name}: ${err.message})`, "error");
    }
    Object.assign(webcam, { session: null, rows: [], busy: false, start: performance.now(), run: webcam.run + 1 });
    $("annotated-video").pause();
    $("annotated-video").hidden = true;
    $("webcam-video").srcObject = webcam.stream;
    $("webcam-video").hidden = false;  // a hidden <video> paints no frames to draw from
    $("curves-figure").hidden = false;
    $("results").hidden = false;
    $("result-title").textContent = "webcam (live)";
    $("thumbs").replaceChildren();
    $("files").replaceChildren();
    setWarnings([]);
    $("webcam-start").disabled = true;
    $("webcam-stop").disabled = false;
    webcam.timer = setInterval(sendWebcamFrame, 400);
    setStatus("webcam: streaming frames to the server ...", "busy");
  }

  function stopWebcam() {
    if (webcam.timer) clearInterval(webcam.timer);
    if (webcam.stream) webcam.stream.getTracks().forEach((t) => t.stop());
    webcam.timer = null;
    webcam.stream = null;
    $("webcam-video").hidden = true;
    $("webcam-start").disabled = false;
    $("webcam-stop").disabled = true;
  }

  $("upload-form").addEventListener("submit", upload);
  $("webcam-start").addEventListener("click", startWebcam);
  $("webcam-stop").addEventListener("click", () => { stopWebcam(); setStatus("webcam stopped"); });
})();
