// /docs: Swagger UI over the schema named by the page. A file, not an inline script: the Content-Security-Policy
// allows scripts from this server and the CDN only.
(function () {
  const box = document.getElementById("swagger-ui");
  SwaggerUIBundle({
    url: box.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
