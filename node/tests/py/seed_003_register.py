import requests

# Register a service
response = requests.post("http://localhost:8100/api/services", json={
    "name": "my-service",
    "host": "100.100.100.5",  # Tailscale IP
    "port": 8080,
    "mode": "standalone",
    "capabilities": ["rag", "search"],
    "health_url": "http://100.100.100.5:8080/healthz"
})

print(response.json())
