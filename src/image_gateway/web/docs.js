// Swagger UI on the gateway's own document; a file of its own so the page's CSP can forbid inline scripts.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null, // never ask an online validator
  tryItOutEnabled: true,
  persistAuthorization: false,
});
