# Static build, distroless final stage, non-root.
FROM golang:1.26-bookworm AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/medgate ./cmd/medgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/medgate /usr/local/bin/medgate
USER nonroot:nonroot
# Tunnels over TCP and QUIC share a port number; 9901 is the admin endpoint.
# The same image runs the control plane ("control-plane"): gRPC on 7443,
# admin on 9902 (set MEDGATE_ADMIN_ADDR=0.0.0.0:9902 for it).
EXPOSE 8443/tcp 8443/udp 9901/tcp 7443/tcp 9902/tcp
ENV MEDGATE_ADMIN_ADDR=0.0.0.0:9901
ENTRYPOINT ["/usr/local/bin/medgate"]
CMD ["sidecar"]
