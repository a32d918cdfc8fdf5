document.getElementById("form-post-response").submit();
