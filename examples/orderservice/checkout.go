package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// checkout is the shop's checkout: it authorises a card payment at the
// gateway (the PaymentOptions payment call of the sandbox), which the
// capture later takes.
type checkout struct {
	base   string // the gateway's base URL: http://127.0.0.1:8099/api/v1
	apiKey string
	http   *http.Client
}

func newCheckout(base, apiKey string) *checkout {
	return &checkout{base: strings.TrimRight(base, "/"), apiKey: apiKey, http: &http.Client{Timeout: 10 * time.Second}}
}

// authorise posts a payment (a pre-authorisation) with the sandbox's test
// card and returns the authorisation's transaction id.
func (c *checkout) authorise(ctx context.Context, merchant, orderID string, amount int64, currency string) (string, error) {
	address := map[string]string{
		"country": "JP", "email": "billing@testemail.com", "phone_number": "8112345678",
		"address1": "1-2-3 Shinjuku", "city": "Shinjuku-ku", "state": "Tokyo", "postal_code": "1600022",
	}
	body, err := json.Marshal(map[string]any{
		"amount":   strconv.FormatInt(amount, 10),
		"currency": currency,
		"card": map[string]string{
			"cvc": "100", "expiry_month": "12", "expiry_year": "30", "name": "John Doe", "number": "5200000000001005",
		},
		"merchant_txn_ref": orderID,
		"customer_ip":      "127.0.0.1",
		"merchant_id":      merchant,
		"return_url": map[string]string{
			"webhook_url": "http://127.0.0.1/webhook", "success_url": "http://www.successurl.com/", "decline_url": "http://www.declineurl.com/",
		},
		"billing_address":  address,
		"shipping_address": address,
		"browser_info": map[string]any{
			"acceptHeader": "text/html", "screenColorDepth": "48", "javaEnabled": false, "language": "en",
			"screenHeight": "1200", "screenWidth": "1600", "challengeWindow": "4", "userAgent": "payworker-orderservice-example",
		},
		"time_zone": "Asia/Tokyo",
	})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/api/v1/server-to-server-interface/payment", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+c.apiKey)
	req.Header.Set("x-api-key", c.apiKey)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("the sandbox gateway at %s does not answer (it runs inside `go run ./cmd/worker`; or set SANDBOX_URL): %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	var a struct {
		Success         bool `json:"success"`
		GatewayResponse struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"gateway_response"`
		TransactionDetails struct {
			ID string `json:"id"`
		} `json:"transaction_details"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return "", fmt.Errorf("payment: HTTP %d, not JSON: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusCreated || !a.Success || a.TransactionDetails.ID == "" {
		if resp.StatusCode == http.StatusUnauthorized {
			return "", errors.New("payment: HTTP 401: set SANDBOX_API_KEY to the sandbox's key")
		}
		return "", fmt.Errorf("payment: HTTP %d %s: %s", resp.StatusCode, a.GatewayResponse.Code, a.GatewayResponse.Message)
	}
	return a.TransactionDetails.ID, nil
}
