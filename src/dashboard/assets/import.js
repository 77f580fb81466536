// The key import form, enhanced: the file is sent with XMLHttpRequest so
// that the page can show how much of it has gone up, then that the server
// is importing. Without this script the form posts as any form does.
"use strict";

(function () {
  var form = document.querySelector("form[data-progress]");
  if (!form || !window.XMLHttpRequest || !window.FormData) {
    return;
  }
  var status = document.getElementById(form.getAttribute("data-progress"));
  var bar = status.querySelector("progress");
  var text = status.querySelector("span");
  var button = form.querySelector("button[type=submit]");

  function mib(bytes) {
    return (bytes / (1024 * 1024)).toFixed(1);
  }

  function show(message, percent) {
    status.hidden = false;
    text.textContent = message;
    if (percent === null) {
      bar.removeAttribute("value");
    } else {
      bar.value = percent;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", function (progress) {
      if (progress.lengthComputable) {
        var percent = Math.floor((100 * progress.loaded) / progress.total);
        show("Uploading… " + percent + " % (" + mib(progress.loaded) + " of " +
             mib(progress.total) + " MiB)", percent);
      }
    });
    request.upload.addEventListener("load", function () {
      show("Uploaded. Importing the keys and serving the orders waiting for them…", null);
    });
    request.addEventListener("load", function () {
      // The answer is the page a plain form post would have shown.
      if (request.responseURL) {
        window.history.replaceState(null, "", request.responseURL);
      }
      document.open();
      document.write(request.responseText);
      document.close();
    });
    request.addEventListener("error", function () {
      button.disabled = false;
      show("The upload failed: the server could not be reached. Nothing was imported; try again.", 0);
    });
    button.disabled = true;
    show("Uploading…", 0);
    request.send(new FormData(form));
  });
})();
