#!/usr/bin/env python3
"""The upload page over W3C WebDriver (selenium), in Firefox (geckodriver) or Chromium
(chromedriver): a wrong password is refused, the right one logs in, `loras` is chosen with the
keyboard, a big model and a truncated one go in through the file input, the big one is paused
and resumed with the keyboard, then it is cut off (the shell does that when
CONTROL_DIR/restart-now appears, and answers with CONTROL_DIR/restarted): MODE restart kills
and restarts the service; MODE cable drops every packet (a pulled network cable) until the page
shows it noticed the dead connection (this script then writes CONTROL_DIR/noticed). The page
must finish the upload on its own. The page then shows one accepted (sha256 and short hash)
and one refused (the daemon's .why.txt text). Screenshots: BROWSER-*.png in ARTIFACT_DIR.

Usage: webdriver.py firefox|chromium DRIVER URL BIG_FILE TRUNCATED_FILE ARTIFACT_DIR CONTROL_DIR
                    restart|cable
"""
import os
import re
import sys
import time

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.common.action_chains import ActionChains


def until(what, f, seconds):
    end = time.monotonic() + seconds
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)


def start(browser, driver, art):
    if browser == "firefox":
        o = webdriver.FirefoxOptions()
        o.add_argument("-headless")
        o.binary_location = "/usr/bin/firefox-esr"
        s = webdriver.FirefoxService(executable_path=driver, log_output=f"{art}/geckodriver.log")
        return webdriver.Firefox(options=o, service=s)
    o = webdriver.ChromeOptions()
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"]:
        o.add_argument(a)
    o.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(options=o, service=webdriver.ChromeService(executable_path=driver))


def main():
    browser, driver, url, big, bad, art, control, mode = sys.argv[1:]
    # The waits that grow with the big file (the shell may cut it off late: WEB_CUT_PERCENT).
    long = int(os.environ.get("WD_ACCEPT_TIMEOUT", "300"))
    d = start(browser, driver, art)
    shot = lambda name: d.save_screenshot(f"{art}/{browser}-{name}.png")
    css = lambda sel: d.find_elements(By.CSS_SELECTOR, sel)
    try:
        d.set_window_size(1100, 900)
        d.get(url + "/")
        shot("login")
        d.find_element(By.ID, "user").send_keys("alice")
        d.find_element(By.ID, "password").send_keys("wrong")
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        until("the wrong password's error", lambda: css(".error"), 20)
        for field, text in [("user", "alice"), ("password", "pw-alice")]:
            e = d.find_element(By.ID, field)
            e.clear()
            e.send_keys(text)
        d.find_element(By.ID, "password").send_keys(Keys.ENTER)
        chips = until("the folder chips", lambda: css(".chip"), 20)
        names = [f"{c.get_attribute('data-inbox')}/{c.get_attribute('data-folder')}" for c in chips]
        want = names.index("models-inbox/loras")
        # Keyboard only: focus the first chip, arrow to `loras`, Space chooses it.
        d.execute_script("arguments[0].focus()", chips[0])
        keys = ActionChains(d)
        for _ in range(want):
            keys.send_keys(Keys.ARROW_RIGHT)
        keys.send_keys(Keys.SPACE).perform()
        chosen = css(".chip[aria-checked=true]")
        got = [f"{c.get_attribute('data-inbox')}/{c.get_attribute('data-folder')}" for c in chosen]
        assert got == ["models-inbox/loras"], f"the keyboard chose {got}"

        d.find_element(By.ID, "file").send_keys(big + "\n" + bad)
        name = os.path.basename(big)
        item = lambda: [i for i in css(".item") if name in i.text]
        stats = lambda: item()[0].find_element(By.CSS_SELECTOR, ".stats").text
        until("progress, speed and ETA on the big file", lambda: item() and "ETA" in stats(), 60)
        shot("uploading")
        # Pause with the keyboard: focus its Pause button, Enter.
        pause = item()[0].find_element(By.XPATH, ".//button[starts-with(normalize-space(.), 'Pause')]")
        d.execute_script("arguments[0].focus()", pause)
        ActionChains(d).send_keys(Keys.ENTER).perform()
        until("the big file to show paused", lambda: "paused" in item()[0].get_attribute("class"), 20)
        paused_at = stats()
        # The shell checks that the part file has stopped growing.
        print(f"paused at: {paused_at}", flush=True)
        open(f"{control}/paused", "w").close()
        until("the shell to see the part file still", lambda: os.path.exists(f"{control}/still"), 60)
        resume = item()[0].find_element(By.XPATH, ".//button[starts-with(normalize-space(.), 'Resume')]")
        d.execute_script("arguments[0].focus()", resume)
        ActionChains(d).send_keys(Keys.ENTER).perform()
        # The service goes down (or the cable is pulled) under the running upload.
        print(f"cut off at: {stats()}", flush=True)
        open(f"{control}/restart-now", "w").close()
        if mode == "cable":
            # No packet gets through: the page must see that nothing moves and try again (its
            # stall watchdog, a timed-out request or a network error: whichever comes first;
            # Firefox fails the stalled chunk with a network error about 14 s after the cut in
            # some runs, 2 of 15 here), and say so. Every state it shows meanwhile is kept.
            seen = []

            def noticed():
                state = item()[0].find_element(By.CSS_SELECTOR, ".state").text if item() else ""
                if state and (not seen or seen[-1][1] != state):
                    seen.append((round(time.monotonic() - cut, 1), state))
                # A retry for a network reason (not, say, a 409 left from the pause).
                dead = r"(Retrying|Reconnecting).*\((no progress|no answer|connection lost)"
                return re.match(dead, state) and state

            cut = time.monotonic()
            try:
                said = until("the page to notice the dead connection", noticed, long)
            except AssertionError as e:
                shot("cable-failed")
                raise AssertionError(f"{e}; the page showed {seen}") from None
            print(f"noticed: {said} (after {seen[-1][0]} s)", flush=True)
            print(f"the page showed (seconds after the cut, state): {seen}", flush=True)
            shot("cable-out")
            open(f"{control}/noticed", "w").close()
        until("the service back", lambda: os.path.exists(f"{control}/restarted"), long)
        until("the big file accepted", lambda: item() and "accepted" in item()[0].get_attribute("class"), long)
        until("the truncated file refused", lambda: css(".item.refused"), 120)
        shot("page")
        accepted = item()[0].find_element(By.CSS_SELECTOR, ".decision").text
        refused = css(".item.refused .decision")[0].text
        assert re.search(r"Accepted · sha256 [0-9a-f]{64} · short hash [0-9a-f]{10}", accepted), \
            f"accepted text: {accepted}"
        assert "truncated" in refused, f"refused text: {refused}"
        print("ok", flush=True)
    finally:
        d.quit()
        open(f"{control}/done", "w").close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line for the shell's FAIL, the rest on stderr
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
